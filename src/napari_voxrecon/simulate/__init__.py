"""Simulated acquisitions (the task contracts) and procedural phantoms for training data."""

from .acquisition import simulate_projection, simulate_sparse
from .degrade import simulate_restore, poisson_gaussian_noise

__all__ = ["simulate_sparse", "simulate_projection", "simulate_restore", "poisson_gaussian_noise"]
