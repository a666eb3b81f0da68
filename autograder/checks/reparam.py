"""Public checks for the reparam assignment."""
