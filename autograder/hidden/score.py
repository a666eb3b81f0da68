"""Hidden checks for the score assignment."""
