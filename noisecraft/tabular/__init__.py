"""Synthetic tables: mixed-type tabular diffusion (numeric Gaussian + categorical discrete diffusion)."""
