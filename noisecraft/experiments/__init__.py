"""Experiments built on the library: reports that train and measure several models side by side."""
