"""Hidden checks for the vae assignment."""
