"""The drift-diffusion model of two-choice decisions (Ratcliff 1978)."""
