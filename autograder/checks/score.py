"""Public checks for the score assignment."""
