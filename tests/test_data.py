"""Data loading: built-in sets, the fixed digits split, image folders, .npy arrays and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noisecraft.data import DataConfig, load_digits_split
from noisecraft.data.toys import TOYS, toy_2d


def test_digits_split_is_fixed_stratified_and_scaled() -> None:
    x_train, _ = load_digits_split("train")
    x_test, y_test = load_digits_split("test")
    assert x_test.shape == (500, 1, 8, 8) and x_train.shape == (1297, 1, 8, 8)
    assert x_train.min() == -1.0 and x_train.max() == 1.0
    assert np.bincount(y_test).min() >= 48  # stratified: about 50 of each class
    again, _ = load_digits_split("test")
    assert np.array_equal(again, x_test)
    with pytest.raises(ValueError, match="'train' or 'test', got 'val'"):
        load_digits_split("val")


@pytest.mark.parametrize("name", TOYS)
def test_toys_are_seeded_2d(name: str) -> None:
    a, b = toy_2d(name, 100, seed=3), toy_2d(name, 100, seed=3)
    assert a.shape == (100, 2) and np.array_equal(a, b) and 0.3 < a.std() < 3


def _write(folder: Path, name: str, size: tuple[int, int], mode: str = "L") -> None:
    Image.new(mode, size, color=128 if mode == "L" else (10, 20, 30)).save(folder / name)


def test_image_folder_loads_scaled_images(tmp_path: Path) -> None:
    _write(tmp_path, "a.png", (6, 4))
    _write(tmp_path, "b.png", (6, 4))
    data = DataConfig(name=str(tmp_path)).load()
    assert data.x.shape == (2, 1, 4, 6) and data.is_image
    assert float(data.x[0, 0, 0, 0]) == pytest.approx(128 / 127.5 - 1, abs=1e-6)
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    _write(rgb, "c.jpg", (4, 4), "RGB")
    assert DataConfig(name=str(rgb)).load().x.shape == (1, 3, 4, 4)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds no images"):
        DataConfig(name=str(tmp_path)).load()
    _write(tmp_path, "a.png", (4, 4))
    _write(tmp_path, "b.png", (5, 4))
    with pytest.raises(ValueError, match=r"a.png is \(1, 4, 4\).*b.png is \(1, 4, 5\)"):
        DataConfig(name=str(tmp_path)).load()


def test_npy_arrays_and_non_finite_values(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.ones((10, 3)))
    assert DataConfig(name=str(tmp_path / "v.npy")).load().sample_shape == (3,)
    bad = np.ones((10, 3))
    bad[2, 1] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match="1 non-finite values"):
        DataConfig(name=str(tmp_path / "bad.npy")).load()
    with pytest.raises(ValueError, match="does not exist"):
        DataConfig(name=str(tmp_path / "missing.npy")).load()
    with pytest.raises(ValueError, match="unknown data 'mnist'"):
        DataConfig(name="mnist").load()
