"""Public checks for the elbo assignment."""
