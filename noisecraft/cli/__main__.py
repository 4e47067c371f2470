"""`python -m noisecraft.cli` and `torchrun ... -m noisecraft.cli`."""

from noisecraft.cli import app

app()
