"""Public checks for the vae assignment."""
