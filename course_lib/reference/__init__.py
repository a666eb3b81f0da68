"""Reference solutions, one module per assignment. Instructor side: never shipped to students."""

from course_lib.reference import elbo, em, reparam, score, vae

__all__ = ["elbo", "em", "reparam", "score", "vae"]
