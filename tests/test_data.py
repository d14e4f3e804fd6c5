"""Loaders on data the tests make: procedural shapes, PNG folders, MNIST idx files."""

import socket
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from cnnsearch import DataError
from cnnsearch.data import augment, load_data


def test_digits_is_the_real_bundled_set():
    data = load_data("digits", seed=0)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert data.name == "digits" and data.classes == tuple("0123456789")  # what status and export show
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 1797
    assert len(data.x_test) == len(data.y_test) > 300
    for c in range(10):  # stratified: every split holds every class in the same proportion
        per_split = [int((y == c).sum()) for y in (data.y_train, data.y_val, data.y_test)]
        assert abs(per_split[1] - per_split[2]) <= 1 and per_split[0] > per_split[1]
    rows = {tuple(r.tolist()) for r in data.x_test.flatten(1)}
    # disjoint by index; digits itself holds a few identical images, so allow those few
    assert len(rows & {tuple(r.tolist()) for r in data.x_val.flatten(1)}) <= 5
    assert len(rows & {tuple(r.tolist()) for r in data.x_train.flatten(1)}) <= 5
    assert abs(data.x_train.mean().item()) < 1e-4  # normalised with train statistics
    again = load_data("digits", seed=0)
    assert torch.equal(again.x_val, data.x_val) and torch.equal(again.y_train, data.y_train)
    other = load_data("digits", seed=1)
    assert not torch.equal(other.y_train, data.y_train)


def test_shapes_any_size_deterministic_by_seed():
    a = load_data("shapes", n=300, size=20, classes=5, channels=1, seed=3)
    b = load_data("shapes", n=300, size=20, classes=5, channels=1, seed=3)
    c = load_data("shapes", n=300, size=20, classes=5, channels=1, seed=4)
    assert a.input_shape == (1, 20, 20) and a.num_classes == 5
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    counts = torch.bincount(torch.cat([a.y_train, a.y_val, a.y_test]), minlength=5)
    assert counts.tolist() == [60] * 5  # balanced classes
    with pytest.raises(DataError, match="classes must be in"):
        load_data("shapes", classes=20)


def test_augment_keeps_shape_and_is_seeded():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    a = augment(x, torch.Generator().manual_seed(0))
    b = augment(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(augment(x, torch.Generator().manual_seed(1)), a)


def test_image_folder_from_pngs(tmp_path):
    rng = np.random.default_rng(0)
    for cls, colour in (("cats", 0), ("dogs", 2)):
        (tmp_path / cls).mkdir()
        for i in range(10):
            img = rng.integers(0, 60, (24, 30, 3), dtype=np.uint8)
            img[..., colour] = 250
            Image.fromarray(img).save(tmp_path / cls / f"{i}.png")
    data = load_data(f"folder:{tmp_path}", size=16, val_fraction=0.2, seed=0)
    assert data.classes == ("cats", "dogs")
    assert data.input_shape == (3, 16, 16)
    assert len(data.x_train) == 12 and len(data.x_val) == 4 and len(data.x_test) == 4
    chosen = load_data(f"folder:{tmp_path}")  # size chosen from the photos: median short side
    assert chosen.input_shape == (3, 24, 24)
    # red cats, blue dogs survive the resize and normalisation
    x = data.prepare(data.x_train)
    red_minus_blue = (x[:, 0] - x[:, 2]).mean(dim=(1, 2))
    assert ((red_minus_blue > 0) == (data.y_train == 0)).all()


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        load_data(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "only").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "only" / "a.png")
    with pytest.raises(DataError, match="need at least 2"):
        load_data(f"folder:{tmp_path}")


def _idx(path, array, magic):
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_torchvision_mnist_from_files_the_test_writes(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 50), ("t10k", 10)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 30, (n, 28, 28))
        images[np.arange(n), labels, :] = 255  # row `label` lit: learnable, checkable
        _idx(raw / f"{prefix}-images-idx3-ubyte", images, 0x803)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 0x801)
    data = load_data("MNIST", root=tmp_path, download=False, val_fraction=0.2)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert len(data.x_train) + len(data.x_val) == 50
    assert len(data.x_test) == 10  # the official t10k split, normalised with the train statistics
    assert data.x_train.dtype == data.x_test.dtype == torch.uint8  # raw pixels: prepare() normalises
    assert torch.equal(data.prepare(data.x_test)[:, 0].mean(dim=2).argmax(dim=1), data.y_test)
    lit_rows = data.prepare(data.x_train)[:, 0].mean(dim=2).argmax(dim=1)
    assert torch.equal(lit_rows, data.y_train)


def test_offline_torchvision_name_is_a_data_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (disabled by the test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(DataError, match=r"CIFAR10: not found in .* could not be downloaded"):
        load_data("CIFAR10", root=tmp_path)


def test_unknown_dataset_name():
    with pytest.raises(DataError, match="'imagenet' is not one of digits, shapes"):
        load_data("imagenet")
