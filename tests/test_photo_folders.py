"""Photo folders as the issue asks: aspect kept (short side resized, centre cropped, as
torchvision's Resize + CenterCrop), uint8 pixels in memory that ``prepare`` normalises per
batch to exactly the float data earlier versions held, class counts, and one error line for
a corrupt file."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from cnnsearch import DataError
from cnnsearch.data import load_data, pixel_statistics, resize_and_crop

SIZES = ((30, 50), (64, 20), (40, 40))  # (width, height): tall, wide, square


def _folder(root, counts=(("many", 30), ("few", 3))):
    """Noise photos (every one different) of mixed sizes and aspect ratios, PNG and JPEG;
    class ``many`` brighter than class ``few``."""
    rng = np.random.default_rng(0)
    files = []
    for c, (name, count) in enumerate(counts):
        (root / name).mkdir()
        for i in range(count):
            w, h = SIZES[i % len(SIZES)]
            pixels = rng.integers(0, 120, (h, w, 3), dtype=np.uint8) + np.uint8(120 * (c == 0))
            file = root / name / f"{i}.{'jpg' if i % 2 else 'png'}"
            Image.fromarray(pixels).save(file)
            files.append(file)
    return files


def _all_images(data):
    return torch.cat([data.x_train, data.x_val, data.x_test])


def test_a_zero_byte_photo_is_one_data_error_naming_it_in_the_probe_and_in_the_read(tmp_path):
    _folder(tmp_path)
    bad = tmp_path / "few" / "empty.jpg"
    bad.write_bytes(b"")
    for options in ({}, {"size": 16}):  # the default size probes every file here; a given size reads them
        with pytest.raises(DataError) as info:
            load_data(f"folder:{tmp_path}", **options)
        message = str(info.value)
        assert message.startswith(f"folder:{tmp_path}: cannot read {bad} (") and "\n" not in message


def test_photos_keep_their_aspect_held_as_uint8(tmp_path):
    from torchvision.transforms import CenterCrop, Resize

    files = _folder(tmp_path)
    data = load_data(f"folder:{tmp_path}", size=16)
    assert data.input_shape == (3, 16, 16)
    assert all(x.dtype == torch.uint8 and x.is_contiguous() for x in (data.x_train, data.x_val, data.x_test))
    held = {bytes(image.numpy()) for image in _all_images(data)}
    assert len(held) == len(files) == 33
    for file in files:  # every photo as torchvision's Resize(16) + CenterCrop(16) make it
        with Image.open(file) as im:
            expected = np.asarray(CenterCrop(16)(Resize(16)(im.convert("RGB")))).transpose(2, 0, 1)
        assert bytes(np.ascontiguousarray(expected)) in held, file
    with Image.open(files[1]) as wide:  # 64 x 20: to 51 x 16, then columns 18..33 (round(17.5) = 18)
        assert wide.size == (64, 20)
        by_hand = np.asarray(wide.convert("RGB").resize((51, 16), Image.BILINEAR).crop((18, 0, 34, 16)))
        squashed = np.asarray(wide.convert("RGB").resize((16, 16), Image.BILINEAR))
    assert np.array_equal(np.asarray(resize_and_crop(Image.open(files[1]).convert("RGB"), 16)), by_hand)
    assert bytes(np.ascontiguousarray(by_hand.transpose(2, 0, 1))) in held
    assert bytes(np.ascontiguousarray(squashed.transpose(2, 0, 1))) not in held
    grey = load_data(f"folder:{tmp_path}", size=12, channels=1)
    assert grey.input_shape == (1, 12, 12) and grey.x_train.dtype == torch.uint8


def test_default_size_is_the_median_short_side_clamped(tmp_path):
    _folder(tmp_path)  # short sides 30, 20, 40: median 30
    assert load_data(f"folder:{tmp_path}").input_shape == (3, 30, 30)


def test_prepare_gives_the_float_data_earlier_versions_held_in_a_quarter_of_the_memory(tmp_path):
    _folder(tmp_path)
    data = load_data(f"folder:{tmp_path}", size=16)
    raw = _all_images(data).float() / 255  # the [0, 1] pixels the float version normalised
    train_raw = data.x_train.float() / 255
    mean, std = train_raw.mean(dim=(0, 2, 3)), train_raw.std(dim=(0, 2, 3))
    assert data.mean == tuple(mean.tolist()) and data.std == tuple(std.tolist())  # train split, [0, 1] units
    assert set(data.description()) == {"name", "input_size", "classes", "mean", "std"}
    old = (raw - mean[:, None, None]) / std[:, None, None]
    prepared = data.prepare(_all_images(data))
    assert prepared.dtype == torch.float32 and torch.equal(prepared, old)  # bit for bit
    assert data.x_train.element_size() * 4 == prepared.element_size()
    assert data.x_train.nbytes * 4 == data.prepare(data.x_train).nbytes
    floats = replace(data, x_train=data.prepare(data.x_train), x_val=data.prepare(data.x_val),
                     x_test=data.prepare(data.x_test))
    assert floats.prepare(floats.x_val) is floats.x_val  # float data is already normalised


def test_class_counts_per_split(tmp_path):
    _folder(tmp_path)
    data = load_data(f"folder:{tmp_path}", size=8, val_fraction=0.2, test_fraction=0.2)
    counts = data.class_counts()
    # stratified: round(30 x 0.2) = 6 and round(3 x 0.2) = 1 to validation and test each
    assert counts == {"train": {"many": 18, "few": 1}, "val": {"many": 6, "few": 1}, "test": {"many": 6, "few": 1}}
    assert list(counts["train"]) == ["few", "many"] == list(data.classes)  # class order (sorted folders)
    assert replace(data, x_test=None, y_test=None).class_counts() == {"train": counts["train"], "val": counts["val"]}


def test_large_sets_take_their_statistics_in_exact_integer_chunks(monkeypatch):
    import cnnsearch.data as data_mod

    x = torch.randint(0, 256, (37, 3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    whole = pixel_statistics(x)
    monkeypatch.setattr(data_mod, "_WHOLE", 0)
    monkeypatch.setattr(data_mod, "_CHUNK", 200)  # 2 images a chunk
    chunked = pixel_statistics(x)
    exact = x.double() / 255
    for got, want in zip(chunked, (exact.mean(dim=(0, 2, 3)), exact.std(dim=(0, 2, 3)))):
        assert got.dtype == torch.float32 and torch.allclose(got.double(), want, rtol=1e-7, atol=0)
    assert all(torch.allclose(a, b, rtol=1e-6) for a, b in zip(whole, chunked))
