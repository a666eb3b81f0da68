"""Hidden checks for the reparam assignment."""
