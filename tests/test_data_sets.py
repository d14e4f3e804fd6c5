"""The data sets' documented properties: the procedural shapes generator (classes, image
size, geometry, colours, noise, determinism, limits), torchvision sets read from small fake
files in their on-disk formats (CIFAR10 pickles, SVHN .mat), photo folders, and augment's
crop-and-flip semantics checked against a brute-force reference."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from cnnsearch import DataError
from cnnsearch.data import SHAPE_CLASSES, augment, load_data, shapes
from tests.broken_images import broken_images


def raw_pixels(data):
    """All images of all three splits, back in the raw [0, 1] pixel scale, with labels: uint8
    pixels (folders, torchvision sets) / 255, or float ones un-normalised."""
    x = torch.cat([data.x_train, data.x_val, data.x_test])
    if x.dtype == torch.uint8:
        x = x.float() / 255
    else:
        x = x * torch.tensor(data.std)[:, None, None] + torch.tensor(data.mean)[:, None, None]
    return x, torch.cat([data.y_train, data.y_val, data.y_test])


# ---------------------------------------------------------------- shapes: limits and defaults


def test_shapes_defaults_are_the_documented_ones():
    data = shapes()
    assert data.input_shape == (3, 32, 32) and data.classes == SHAPE_CLASSES[:6]
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 4000
    assert data.name == "shapes32"
    small = shapes(n=300)
    explicit = shapes(n=300, size=32, classes=6, channels=3, noise=0.25, val_fraction=0.2, test_fraction=0.2,
                      seed=0)
    assert torch.equal(small.x_train, explicit.x_train) and torch.equal(small.y_val, explicit.y_val)


@pytest.mark.parametrize("classes", [2, len(SHAPE_CLASSES)])
def test_shapes_class_count_bounds_are_inclusive(classes):
    data = shapes(n=20 * classes, size=12, classes=classes, channels=1, seed=1)
    assert data.classes == SHAPE_CLASSES[:classes]
    assert sorted(torch.cat([data.y_train, data.y_val, data.y_test]).unique().tolist()) == list(range(classes))


@pytest.mark.parametrize("classes", [1, len(SHAPE_CLASSES) + 1])
def test_shapes_class_count_outside_bounds(classes):
    with pytest.raises(DataError, match=f"got {classes}"):
        shapes(n=100, classes=classes)


def test_shapes_smallest_accepted_sizes():
    assert shapes(n=40, size=8, classes=2, channels=1).input_shape == (1, 8, 8)
    small = shapes(n=5, size=16, classes=2, channels=1)  # n >= 2 x classes and enough to split
    assert len(small.x_train) + len(small.x_val) + len(small.x_test) == 5


@pytest.mark.parametrize(("options", "named"), [
    ({"size": 7}, "size=7"),
    ({"n": 5, "classes": 3}, "n=5"),
    ({"channels": 2}, "channels=2"),
])
def test_shapes_bad_size_count_or_channels_each_alone(options, named):
    with pytest.raises(DataError, match="shapes: need") as err:
        shapes(**{"n": 40, "size": 16, "classes": 2, "channels": 1, **options})
    assert named in str(err.value)
    if "n" in options:
        assert "n >= 6" in str(err.value)  # 2 x classes


# ---------------------------------------------------------------- shapes: images


@pytest.fixture  # per test, not per module: mutmut credits a test only with the calls made in it
def clean_shapes():
    """Noise-free shapes, all eight classes, more than one generation chunk of 1024."""
    data = shapes(n=1200, size=32, classes=8, channels=3, noise=0.0, seed=5)
    x, y = raw_pixels(data)
    background = x[:, :, :1, :1]  # a corner pixel: every shape lies inside the image
    mask = ((x - background).abs() > 1e-3).any(dim=1)  # (N, H, W) the shape's pixels
    return x, y, mask


def test_noise_free_shapes_have_two_colours_shape_and_background(clean_shapes):
    x, _, mask = clean_shapes
    assert mask.flatten(1).any(dim=1).all()  # every image shows its shape
    fg = (x * mask[:, None]).sum(dim=(2, 3)) / mask[:, None].sum(dim=(2, 3))
    bg = x[:, :, 0, 0]
    # exactly one colour on the shape and one on the background
    assert torch.allclose(torch.where(mask[:, None], x, fg[:, :, None, None]), fg[:, :, None, None].expand_as(x),
                          atol=1e-3)
    assert torch.allclose(torch.where(mask[:, None], bg[:, :, None, None], x), bg[:, :, None, None].expand_as(x),
                          atol=1e-3)
    # random colours: light shapes on dark backgrounds, each drawn uniformly over its range
    assert fg.min() >= 0.4 - 1e-3 and fg.max() <= 1.0 + 1e-3 and bg.min() >= -1e-3 and bg.max() <= 0.5 + 1e-3
    assert abs(fg.mean() - 0.7) < 0.03 and abs(bg.mean() - 0.25) < 0.03
    assert fg.std() > 0.12 and bg.std() > 0.1


def _boxes(mask):
    rows, cols = mask.any(dim=2), mask.any(dim=1)
    idx = torch.arange(mask.shape[1])
    top = torch.where(rows, idx, mask.shape[1]).min(dim=1).values
    bottom = torch.where(rows, idx, -1).max(dim=1).values
    left = torch.where(cols, idx, mask.shape[2]).min(dim=1).values
    right = torch.where(cols, idx, -1).max(dim=1).values
    return top, bottom + 1, left, right + 1


def test_each_class_has_its_shape(clean_shapes):
    """Geometry worked out by hand for each documented shape (r: the shape's scale, drawn
    uniformly over [0.15, 0.35] x size, so its mean is a quarter of the image)."""
    _, y, mask = clean_shapes
    size = mask.shape[1]
    top, bottom, left, right = _boxes(mask)
    height, width = (bottom - top).float(), (right - left).float()
    fill = mask.flatten(1).sum(dim=1) / (height * width)
    centre = mask[torch.arange(len(mask)), (top + bottom) // 2, (left + right) // 2]
    expect = {  # class: (mean width / size, mean height / size, mean fill of the bounding box)
        "circle": (0.5, 0.5, np.pi / 4), "square": (0.4, 0.4, 1.0), "diamond": (0.5, 0.5, 0.5),
        "ring": (0.5, 0.5, np.pi / 4 * (1 - 0.6 ** 2)), "cross": (0.5, 0.5, 5 / 9),
        "triangle": (0.45, 0.45, 0.5), "hbar": (0.5, 0.5 / 3, 1.0), "vbar": (0.5 / 3, 0.5, 1.0),
    }
    for c, name in enumerate(SHAPE_CLASSES):
        k = y == c
        w, h, f = expect[name]
        assert abs((width[k] / size).mean() - w) < 0.04, name
        assert abs((height[k] / size).mean() - h) < 0.04, name
        assert abs(fill[k].mean() - f) < 0.06, name
        assert (centre[k] == (name != "ring")).all(), name  # a ring is hollow, the others are not
    triangles = mask[y == SHAPE_CLASSES.index("triangle")].sum(dim=2).float()  # row widths
    for rows in triangles:
        widths = rows[rows > 0]
        assert widths[-1] > widths[0] and (widths.diff() >= -1).all()  # apex up, widening down


def test_shapes_are_placed_uniformly_about_the_centre(clean_shapes):
    _, y, mask = clean_shapes
    size = mask.shape[1]
    top, bottom, left, right = _boxes(mask)
    assert abs(((left + right) / 2).float().mean() - size / 2) < 0.6
    upright = y != SHAPE_CLASSES.index("triangle")  # a triangle's box is not centred on its place
    assert abs(((top + bottom) / 2).float()[upright].mean() - size / 2) < 0.6


def test_noise_perturbs_the_background_and_stays_in_range():
    spread = []
    for noise in (0.0, 0.1, 0.3):
        x, _ = raw_pixels(shapes(n=200, size=16, classes=4, channels=1, noise=noise, seed=2))
        corner = x[:, 0, :4, :4].flatten(1)  # background pixels only, mostly
        spread.append(corner.std(dim=1).median().item())
        assert x.min() >= -1e-4 and x.max() <= 1 + 1e-4
    assert spread[0] < 1e-4 < spread[1] < spread[2]
    x, _ = raw_pixels(shapes(n=200, size=16, classes=4, channels=1, noise=1.0, seed=2))
    assert x.min() >= -1e-4 and x.max() <= 1 + 1e-4  # clipped to [0, 1], and reaching both ends
    assert (x < 1e-3).float().mean() > 0.1 and (x > 1 - 1e-3).float().mean() > 0.1


# ---------------------------------------------------------------- torchvision sets from fake files


def _cifar_files(root, n_train=40, n_test=10):
    """cifar-10-batches-py as torchvision reads it: pickled (N, 3072) uint8 rows, CHW order.
    Class c is red with a green value of 10 x c and blue 200."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(n, offset):
        labels = [(i + offset) % 10 for i in range(n)]
        images = np.zeros((n, 3, 32, 32), np.uint8)
        images[:, 0] = 255
        images[:, 1] = np.array(labels)[:, None, None] * 10
        images[:, 2] = 200
        return {"data": images.reshape(n, -1), "labels": labels}

    for i in range(5):
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batch(n_train // 5, i)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(n_test, 0)))
    names = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return names


@pytest.fixture
def trust_fake_files(monkeypatch):
    """The fake files cannot have the real checksums: accept them."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn

    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(svhn, "check_integrity", lambda *a, **k: True)


def test_cifar10_channels_classes_scale_and_official_test(tmp_path, trust_fake_files):
    names = _cifar_files(tmp_path)
    data = load_data("CIFAR10", root=tmp_path, download=False, val_fraction=0.25)
    assert data.name == "CIFAR10" and data.classes == tuple(names)
    assert data.input_shape == (3, 32, 32)
    assert len(data.x_train) == 30 and len(data.x_val) == 10 and len(data.x_test) == 10
    x, y = raw_pixels(data)
    assert torch.allclose(x[:, 0], torch.ones(()), atol=1e-5)  # red channel first, /255
    assert torch.allclose(x[:, 2], torch.tensor(200 / 255), atol=1e-5)
    assert torch.allclose(x[:, 1, 0, 0], y * 10 / 255, atol=1e-5)  # each image kept with its label
    assert data.y_train.dtype == torch.int64
    assert data.mean[0] == pytest.approx(1.0) and data.mean[2] == pytest.approx(200 / 255)


def test_torchvision_defaults_and_limit(tmp_path, trust_fake_files):
    _cifar_files(tmp_path, n_train=100, n_test=80)
    data = load_data("CIFAR10", root=tmp_path, download=False)
    assert len(data.x_val) == 10 and len(data.x_train) == 90  # a tenth for validation
    same = load_data("CIFAR10", root=tmp_path, download=False, seed=0)
    assert torch.equal(same.y_train, data.y_train)
    limited = load_data("CIFAR10", root=tmp_path, download=False, limit=60)
    assert len(limited.x_train) + len(limited.x_val) == 60 and len(limited.x_test) == 60


def test_download_asked_for_both_splits_only_when_wanted(tmp_path, trust_fake_files, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    def fake_download(self):
        calls.append(self.train)
        if not (tmp_path / "cifar-10-batches-py").exists():
            _cifar_files(tmp_path)

    monkeypatch.setattr(tvd.CIFAR10, "download", fake_download)
    load_data("CIFAR10", root=tmp_path, download=True, val_fraction=0.25)
    assert calls == [True, False]
    calls.clear()
    load_data("CIFAR10", root=tmp_path, download=False, val_fraction=0.25)
    assert calls == []


@pytest.mark.parametrize(("error", "shown"), [
    (OSError("disk on fire\nsecond line"), "OSError: disk on fire)"),
    (RuntimeError(""), "RuntimeError: no detail"),
])
def test_torchvision_failure_names_the_cause(tmp_path, monkeypatch, error, shown):
    import torchvision.datasets as tvd

    def broken(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(tvd.CIFAR10, "__init__", broken)
    with pytest.raises(DataError) as err:
        load_data("CIFAR10", root=tmp_path, download=False)
    assert shown in str(err.value) and "second line" not in str(err.value)


def test_svhn_split_labels_and_classes(tmp_path, trust_fake_files):
    from scipy.io import savemat

    for split, n in (("train", 30), ("test", 10)):
        labels = np.arange(n) % 10 + 1  # SVHN writes digit 0 as label 10
        images = np.zeros((32, 32, 3, n), np.uint8)
        images[:, :, 1, :] = (labels % 10) * 20
        savemat(tmp_path / f"{split}_32x32.mat", {"X": images, "y": labels[:, None].astype(np.uint8)})
    data = load_data("SVHN", root=tmp_path, download=False, val_fraction=0.2)
    assert data.input_shape == (3, 32, 32)
    assert data.classes == tuple(str(c) for c in range(10))  # SVHN names none: the digits
    assert len(data.x_test) == 10 and len(data.x_train) + len(data.x_val) == 30
    x, y = raw_pixels(data)
    assert torch.allclose(x[:, 1, 5, 5], y * 20 / 255, atol=1e-5)
    assert data.y_train.dtype == torch.int64


# ---------------------------------------------------------------- photo folders


def _photos(root, sizes, classes=("a", "b"), mode="RGB", per_class=4):
    for c, name in enumerate(classes):
        (root / name).mkdir()
        for i in range(per_class):
            side = sizes[(c * per_class + i) % len(sizes)]
            colour = (200, 40 + 100 * c, 10) if mode == "RGB" else 60 + 100 * c
            Image.new(mode, (side, side + 3), colour).save(root / name / f"{i}.png")


def test_folder_default_size_is_capped_and_floored(tmp_path):
    (tmp_path / "big").mkdir()
    (tmp_path / "small").mkdir()
    _photos(tmp_path / "big", [100])
    _photos(tmp_path / "small", [5])
    assert load_data(f"folder:{tmp_path / 'big'}").input_shape == (3, 64, 64)
    assert load_data(f"folder:{tmp_path / 'small'}").input_shape == (3, 8, 8)


def test_folder_grey_channels_name_scale_and_default_seed(tmp_path):
    _photos(tmp_path, [12], mode="RGB", per_class=5)
    grey = load_data(f"folder:{tmp_path}", size=8, channels=1)
    assert grey.input_shape == (1, 8, 8) and grey.name == f"folder:{tmp_path.name}"
    colour = load_data(f"folder:{tmp_path}", size=8)
    x, y = raw_pixels(colour)
    expected = torch.tensor([[200, 40, 10], [200, 140, 10]]).float()[y] / 255
    assert torch.allclose(x[:, :, 3, 3], expected, atol=1e-5)
    assert colour.y_train.dtype == torch.int64
    assert torch.equal(load_data(f"folder:{tmp_path}", size=8, seed=0).y_train, colour.y_train)


def test_folder_resize_does_not_ring(tmp_path):
    """Upscaling a hard edge blends it (values stay within the photo's range)."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(5):
            img = np.full((6, 6), 60, np.uint8)
            img[:, 3:] = 190
            Image.fromarray(img).save(tmp_path / name / f"{i}.png")
    x, _ = raw_pixels(load_data(f"folder:{tmp_path}", size=24, channels=1))
    assert x.min() >= 60 / 255 - 1e-4 and x.max() <= 190 / 255 + 1e-4


def test_folder_unreadable_photo_and_empty_class_are_named(tmp_path):
    _photos(tmp_path, [10])
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        load_data(f"folder:{tmp_path}", size=8)
    empty = tmp_path / "empty"
    (empty / "x").mkdir(parents=True)
    (empty / "y").mkdir()
    with pytest.raises(DataError, match="folder:.*empty"):
        load_data(f"folder:{empty}")


def test_folder_unreadable_image_in_any_class_is_one_data_error_naming_it(tmp_path):
    """Whatever PIL raises on a file it cannot decode (not only OSError), in the first class
    or in the second, which a size probe of the first 200 files never opened."""
    _photos(tmp_path, [10], per_class=201)
    for kind, content in broken_images().items():
        for where in ("a", "b"):
            bad = tmp_path / where / "bad.png"
            bad.write_bytes(content)
            for options in ({}, {"size": 8}):  # with the size probe, and without
                with pytest.raises(DataError) as info:
                    load_data(f"folder:{tmp_path}", **options)
                message = str(info.value)
                assert message.startswith(f"folder:{tmp_path}: cannot read {bad} ("), (kind, where, message)
                assert "\n" not in message
            bad.unlink()


def test_folder_default_size_probes_every_class(tmp_path):
    """The median short side over photos of all classes, not only the first class's."""
    for name, side, count in (("a", 8, 201), ("b", 40, 300)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.new("L", (side, side)).save(tmp_path / name / f"{i:03d}.png")
    assert load_data(f"folder:{tmp_path}", channels=1).input_shape == (1, 40, 40)


def test_spread_keeps_both_ends_evenly_and_short_lists_whole():
    from cnnsearch.data import spread

    assert spread(list(range(10)), most=4) == [0, 3, 6, 9]
    assert spread(list(range(1000)), most=200)[-1] == 999 and len(spread(list(range(1000)), most=200)) == 200
    assert spread([1, 2, 3], most=200) == [1, 2, 3]


# ---------------------------------------------------------------- augment


def _reference_views(image, pad):
    """Every crop of the zero-padded image and of its mirror: {(flipped, dx, dy): view}."""
    _, h, w = image.shape
    views = {}
    for flipped in (False, True):
        src = image.flip(2) if flipped else image
        padded = torch.nn.functional.pad(src, (pad, pad, pad, pad))
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                views[(flipped, dx, dy)] = padded[:, dy:dy + h, dx:dx + w]
    return views


@pytest.mark.parametrize("pad", [1, 2, None])
def test_augment_is_a_random_crop_of_the_padded_image_and_a_random_flip(pad):
    n = 300
    x = (torch.arange(2 * 5 * 6, dtype=torch.float32) + 1).reshape(1, 2, 5, 6).repeat(n, 1, 1, 1)
    if pad is None:  # the default: pad 2, as the trainer's augment option documents
        out, pad = augment(x, torch.Generator().manual_seed(0)), 2
    else:
        out = augment(x, torch.Generator().manual_seed(0), pad=pad)
    views = _reference_views(x[0], pad)
    seen = []
    for img in out:
        match = [k for k, v in views.items() if torch.equal(v, img)]
        assert len(match) == 1
        seen.append(match[0])
    assert {k[1] for k in seen} == {k[2] for k in seen} == set(range(2 * pad + 1))  # every shift
    flipped = sum(k[0] for k in seen) / n
    assert 0.4 < flipped < 0.6  # half of the images mirrored


@pytest.mark.parametrize(("pad", "flip"), [(2, True), (0, True), (1, False)])
def test_augment_keeps_the_images_on_their_device(pad, flip):
    """The trainer keeps data on the GPU: every index augment makes is on the images' device.
    The meta device stands in for a GPU here: mixing it with a CPU tensor fails as cuda would."""
    x = torch.zeros(4, 3, 8, 8, device="meta")
    out = augment(x, torch.Generator().manual_seed(0), pad=pad, flip=flip)
    assert out.device == x.device and out.shape == x.shape


def test_augment_without_flip_or_pad():
    x = torch.randn(64, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, g, pad=0, flip=False), x)
    flipped_only = augment(x, g, pad=0)
    mirrored = (flipped_only == x.flip(3)).flatten(1).all(dim=1)
    assert mirrored.any() and (mirrored | (flipped_only == x).flatten(1).all(dim=1)).all()
    assert not mirrored.all()


# ---------------------------------------------------------------- splitting and normalising


def _ids(n_per_class=(10, 7, 5), channels=2):
    """Images whose first pixel is their index: a split can be traced back to its source."""
    y = torch.cat([torch.full((k,), c) for c, k in enumerate(n_per_class)])
    n = len(y)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, channels, 3, 3, generator=g) * torch.tensor([1.0, 5.0][:channels])[:, None, None]
    x[:, 0, 0, 0] = torch.arange(n).float()
    return x, y


def _traced(data, x):
    mean, std = torch.tensor(data.mean)[:, None, None], torch.tensor(data.std)[:, None, None]
    return [(split * std + mean)[:, 0, 0, 0].round().long().tolist() for split in (data.x_train, data.x_val,
                                                                                  data.x_test)]


def test_split_is_stratified_disjoint_and_complete():
    from cnnsearch.data import split_and_normalise

    x, y = _ids()
    data = split_and_normalise("ids", x, y, ["a", "b", "c"], val_fraction=0.2, test_fraction=0.3, seed=4)
    train, val, test = _traced(data, x)
    assert sorted(train + val + test) == list(range(len(y)))  # every image once
    for split, labels in ((train, data.y_train), (val, data.y_val), (test, data.y_test)):
        assert torch.equal(y[split], labels)  # each image keeps its label
    # per class: round(n x fraction) to validation and test, the rest to training
    assert torch.bincount(data.y_val, minlength=3).tolist() == [2, 1, 1]
    assert torch.bincount(data.y_test, minlength=3).tolist() == [3, 2, 2]
    assert torch.bincount(data.y_train, minlength=3).tolist() == [5, 4, 2]
    assert val == sorted(val) and test == sorted(test) and train != sorted(train)  # training order shuffled
    again = split_and_normalise("ids", x, y, ["a", "b", "c"], val_fraction=0.2, test_fraction=0.3, seed=4)
    other = split_and_normalise("ids", x, y, ["a", "b", "c"], val_fraction=0.2, test_fraction=0.3, seed=5)
    assert _traced(again, x) == [train, val, test] and _traced(other, x) != [train, val, test]
    assert data.name == "ids" and data.classes == ("a", "b", "c") and data.num_classes == 3


def test_normalised_with_the_training_split_statistics():
    from cnnsearch.data import split_and_normalise

    x, y = _ids()
    x[:, 1] = 0.5  # a constant channel: no division by zero
    data = split_and_normalise("ids", x, y, ["a", "b", "c"], val_fraction=0.2, test_fraction=0.3, seed=1)
    train, val, test = _traced(data, x)
    raw = x[train]
    assert data.mean == pytest.approx(tuple(raw.mean(dim=(0, 2, 3)).tolist()))
    assert data.std[0] == pytest.approx(raw[:, 0].std().item())
    assert data.std[1] > 0 and torch.isfinite(data.x_val).all() and (data.x_train[:, 1] == 0).all()
    for split, ids in ((data.x_train, train), (data.x_val, val), (data.x_test, test)):
        expected = (x[ids, 0] - data.mean[0]) / data.std[0]
        assert torch.allclose(split[:, 0], expected, atol=1e-5)
        assert split.dtype == torch.float32 and split.is_contiguous()
    assert abs(data.x_train[:, 0].mean().item()) < 1e-5
    assert data.x_train[:, 0].std().item() == pytest.approx(1.0, rel=1e-4)


def test_a_given_test_split_is_kept_and_normalised_alike():
    from cnnsearch.data import split_and_normalise

    x, y = _ids()
    tx, ty = x[:4] + 100, y[:4]
    data = split_and_normalise("ids", x, y, ["a", "b", "c"], val_fraction=0.2, test_fraction=0.0, seed=0,
                               test=(tx, ty))
    assert len(data.x_train) + len(data.x_val) == len(y) and torch.equal(data.y_test, ty)
    mean, std = torch.tensor(data.mean)[:, None, None], torch.tensor(data.std)[:, None, None]
    assert torch.allclose(data.x_test * std + mean, tx, atol=1e-4)


@pytest.mark.parametrize(("val", "test", "named"), [
    (0.0, 0.2, "val_fraction: 0.0"), (1.0, 0.2, "val_fraction: 1.0"), (-0.1, 0.2, "val_fraction: -0.1"),
    (0.2, 0.0, "test_fraction: 0.0"), (0.2, 1.0, "test_fraction: 1.0"), (0.5, 0.5, "test_fraction: 0.5"),
    (0.6, 0.45, "test_fraction: 0.45"),
])
def test_bad_fractions_are_named(val, test, named):
    from cnnsearch.data import split_and_normalise

    x, y = _ids()
    with pytest.raises(DataError, match=named):
        split_and_normalise("ids", x, y, ["a", "b", "c"], val_fraction=val, test_fraction=test, seed=0)


def test_too_few_images_to_split():
    from cnnsearch.data import split_and_normalise

    x, y = _ids((2, 2, 2))
    for val, test in ((0.1, 0.1), (0.4, 0.1), (0.1, 0.4)):  # no split left, no test image, no validation image
        with pytest.raises(DataError, match=rf"^ids: 6 images are too few to split with val_fraction {val} "
                                            rf"and test_fraction {test}$"):
            split_and_normalise("ids", x, y, ["a", "b", "c"], val_fraction=val, test_fraction=test, seed=0)
    data = split_and_normalise("ids", x, y, ["a", "b", "c"], val_fraction=0.4, test_fraction=0.3, seed=0,
                               test=(x[:1], y[:1]))
    assert len(data.x_val) == 3  # round(2 x 0.4) per class; no test share taken from training
    assert len(data.x_train) == 3


def test_description_and_move():
    from cnnsearch.data import split_and_normalise

    x, y = _ids()
    data = split_and_normalise("ids", x, y, ["a", "b", "c"], val_fraction=0.2, test_fraction=0.3, seed=0)
    assert data.description() == {"name": "ids", "input_size": [2, 3, 3], "classes": ["a", "b", "c"],
                                  "mean": list(data.mean), "std": list(data.std)}
    moved = data.to("cpu")
    assert all(torch.equal(getattr(moved, k), getattr(data, k))
               for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"))
    from dataclasses import replace

    dropped = replace(data, x_test=None, y_test=None).to("meta")
    assert dropped.x_test is None and dropped.x_train.device.type == "meta" and dropped.y_val.device.type == "meta"
