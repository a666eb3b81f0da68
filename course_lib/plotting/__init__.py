"""Plots for the notebooks (import from the submodules: em, estimators, vi, vae)."""
