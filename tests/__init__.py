"""noisecraft test suite (a regular package, so `tests.*` never resolves to another distribution's `tests`)."""
