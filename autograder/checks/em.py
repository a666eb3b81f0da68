"""Public checks for the em assignment."""
