"""Data files of noisecraft.signals (the pyhrv test recording); a package so the wheel ships them."""
