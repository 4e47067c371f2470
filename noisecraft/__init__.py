"""noisecraft."""
