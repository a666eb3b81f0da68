"""Hidden checks for the elbo assignment."""
