"""Evaluation metrics: distribution distances, and sample quality for digits."""
