"""Hidden checks for the em assignment."""
