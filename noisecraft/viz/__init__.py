"""Pictures: image grids and scatters of samples, and the figures of the theory (schedules, forward process,
reverse paths)."""
