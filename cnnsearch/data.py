"""Datasets as whole tensors: ``digits`` (embedded), procedural ``shapes``, torchvision
datasets by name, and a user's photos as ``folder:PATH`` (ImageFolder layout).

Every loader returns an ``ImageData``: train, validation and test tensors, split
deterministically by seed (stratified, disjoint; a torchvision set's official test split
is its test split). ``digits`` and ``shapes`` hold them as float32, normalised with the
train split's statistics; photo folders and torchvision sets hold raw uint8 pixels, a
quarter of the memory, and ``ImageData.prepare`` normalises each batch on its device. The
search selects on validation and never reads the test split: only ``finalize`` does. Small
classification sets fit in memory, so the trainer indexes tensors directly (on the GPU when
it trains there) instead of going through a DataLoader and a collate per batch.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

TORCHVISION = ("CIFAR10", "CIFAR100", "MNIST", "FashionMNIST", "KMNIST", "SVHN")
SHAPE_CLASSES = ("circle", "square", "diamond", "ring", "cross", "triangle", "hbar", "vbar")
DEFAULT_CACHE = Path(os.environ.get("CNNSEARCH_DATA", Path.home() / ".cache" / "cnnsearch"))


@dataclass(frozen=True)
class ImageData:
    name: str
    # (N, C, H, W): float32 normalised with the train split's statistics, or uint8 raw pixels
    # (folders, torchvision sets) that prepare() normalises batch by batch
    x_train: torch.Tensor
    y_train: torch.Tensor  # (N,) int64
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor | None  # None only where a caller dropped it (the search needs none)
    y_test: torch.Tensor | None
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, of the raw [0, 1] pixels of the train split
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device: str | torch.device) -> ImageData:
        move = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
                if getattr(self, k) is not None}
        return replace(self, **move)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of this data's images as a network takes it: float32, normalised with the
        train split's statistics, on ``x``'s device. Float data is stored normalised and comes
        back as it is (the same tensor); uint8 pixels become ``(x / 255 - mean) / std``, the
        same float32 operations, so the same numbers, as normalising the whole set up front."""
        if x.dtype != torch.uint8:
            return x
        scale, mean, std = _statistics_on(self.mean, self.std, x.device)
        return (x.float() / scale - mean) / std

    def class_counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each split held: {"train": {class: n}, "val": {...}, "test":
        {...}}, every class in class order (0 where a split has none); no "test" key when the
        test split was dropped (the search drops it)."""
        splits = {"train": self.y_train, "val": self.y_val, "test": self.y_test}
        return {split: dict(zip(self.classes, torch.bincount(y.cpu(), minlength=self.num_classes).tolist()))
                for split, y in splits.items() if y is not None}

    def description(self) -> dict:
        """What an exported network needs to take raw images: plain JSON data."""
        return {"name": self.name, "input_size": list(self.input_shape), "classes": list(self.classes),
                "mean": list(self.mean), "std": list(self.std)}


def split_and_normalise(name: str, x: torch.Tensor, y: torch.Tensor, classes, *, val_fraction: float,
                        test_fraction: float, seed: int,
                        test: tuple[torch.Tensor, torch.Tensor] | None = None) -> ImageData:
    """Stratified, seeded, disjoint train / validation / test split (``test`` given: that
    is the test split, and ``test_fraction`` is unused). Float images (in [0, 1]) are
    normalised with the train split's statistics; uint8 images stay uint8 (``prepare``
    normalises them per batch), their statistics taken in [0, 1] units alike."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction: {val_fraction} is not in (0, 1)")
    if test is None and not (0.0 < test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise DataError(f"test_fraction: {test_fraction} must be in (0, 1) and leave room for "
                        f"training beside val_fraction {val_fraction}")
    g = torch.Generator().manual_seed(seed)
    train_idx, val_idx, test_idx = [], [], []
    for c in range(len(classes)):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = int(round(len(idx) * val_fraction))
        n_test = 0 if test is not None else int(round(len(idx) * test_fraction))
        val_idx.append(idx[:n_val])
        test_idx.append(idx[n_val:n_val + n_test])
        train_idx.append(idx[n_val + n_test:])
    train_idx = torch.cat(train_idx)[torch.randperm(sum(len(t) for t in train_idx), generator=g)]
    val_idx = torch.cat(val_idx).sort().values
    test_idx = torch.cat(test_idx).sort().values
    if len(train_idx) == 0 or len(val_idx) == 0 or (test is None and len(test_idx) == 0):
        raise DataError(f"{name}: {len(y)} images are too few to split with val_fraction {val_fraction}"
                        f" and test_fraction {test_fraction}")
    raw = x.dtype == torch.uint8
    x = x if raw else x.float()
    mean, std = pixel_statistics(x[train_idx]) if raw else (x[train_idx].mean(dim=(0, 2, 3)),
                                                           x[train_idx].std(dim=(0, 2, 3)))
    std = std.clamp_min(1e-6)

    def norm(images: torch.Tensor) -> torch.Tensor:
        if raw:
            return images.contiguous()
        return ((images.float() - mean[:, None, None]) / std[:, None, None]).contiguous()

    x_test, y_test = (x[test_idx], y[test_idx]) if test is None else test
    if raw and x_test.dtype != torch.uint8:
        raise DataError(f"{name}: the test split is {x_test.dtype}, the rest uint8")
    return ImageData(name, norm(x[train_idx]), y[train_idx], norm(x[val_idx]), y[val_idx],
                     norm(x_test), y_test, tuple(classes), tuple(mean.tolist()), tuple(std.tolist()))


_WHOLE = 1 << 28  # pixels up to which statistics are taken over one float copy (1 GiB)
_CHUNK = 1 << 24  # pixels per chunk above that


def pixel_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) std of uint8 images (N, C, H, W) in [0, 1] units, as
    float32. Up to 2^28 pixels, over one float32 copy: the numbers the float data of earlier
    versions gave, so a stored data description still matches. Above, exact integer sums
    over chunks: a large photo folder never needs a float copy of itself."""
    if x.numel() <= _WHOLE:
        f = x.float() / 255.0
        return f.mean(dim=(0, 2, 3)), f.std(dim=(0, 2, 3))
    c = x.shape[1]
    sums = torch.zeros(c, dtype=torch.int64)
    squares = torch.zeros(c, dtype=torch.int64)
    step = max(1, _CHUNK // max(1, x[0].numel()))
    for i in range(0, len(x), step):
        chunk = x[i:i + step].to(torch.int64)
        sums += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
    n = x.numel() // c  # Python integers: the sums and the variance's numerator stay exact
    mean = [s / (n * 255) for s in sums.tolist()]
    var = [(q * n - s * s) / (n * max(1, n - 1) * 255 ** 2) for s, q in zip(sums.tolist(), squares.tolist())]
    return torch.tensor(mean), torch.tensor(var).sqrt()


@functools.lru_cache(maxsize=32)
def _statistics_on(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
    """(255, mean, std) as float32 tensors on ``device``, shaped to broadcast over a batch:
    made once per device, not per batch. 255 is a tensor too: a CUDA division by a Python
    number multiplies by its reciprocal, which can differ from the division in the last bit."""
    def on(values) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1).to(device)

    return torch.tensor(255.0, device=device), on(mean), on(std)


def digits(*, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0) -> ImageData:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32)  # pragma: no mutate (float64 gives the same float32 tensor after normalising)
    x = torch.from_numpy(images / 16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return split_and_normalise("digits", x, y, [str(c) for c in range(10)],
                               val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)


def shapes(*, n: int = 4000, size: int = 32, classes: int = 6, channels: int = 3,
           noise: float = 0.25, val_fraction: float = 0.2, test_fraction: float = 0.2,
           seed: int = 0) -> ImageData:
    """Procedural shapes: one of ``classes`` shapes at a random place, scale and colour on a
    noisy background. Any size and resolution, deterministic by seed. Small shapes, noise
    and colour clutter make it hard enough that depth, width and pooling change accuracy."""
    if not 2 <= classes <= len(SHAPE_CLASSES):
        raise DataError(f"shapes: classes must be in [2, {len(SHAPE_CLASSES)}], got {classes}")
    if size < 8 or n < 2 * classes or channels not in (1, 3):
        raise DataError(f"shapes: need size >= 8, n >= {2 * classes}, channels 1 or 3; "
                        f"got size={size}, n={n}, channels={channels}")
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    rng.shuffle(y)
    r = rng.uniform(0.15, 0.35, n) * size
    cx = rng.uniform(r, size - r)
    cy = rng.uniform(r, size - r)
    grid = np.arange(size, dtype=np.float32) + 0.5
    x = np.empty((n, channels, size, size), np.float32)
    for start in range(0, n, 1024):  # bounded memory for big sets
        s = slice(start, start + 1024)
        dx = grid[None, None, :] - cx[s, None, None]
        dy = grid[None, :, None] - cy[s, None, None]
        rr = r[s, None, None]
        ax, ay, dist = np.abs(dx), np.abs(dy), np.hypot(dx, dy)
        masks = np.stack([
            dist < rr,
            np.maximum(ax, ay) < rr * 0.8,
            ax + ay < rr,
            (dist < rr) & (dist > rr * 0.6),
            ((ax < rr / 3) & (ay < rr)) | ((ay < rr / 3) & (ax < rr)),
            (dy > -rr) & (dy < rr * 0.8) & (ax < (dy + rr) * 0.5),
            (ax < rr) & (ay < rr / 3),
            (ay < rr) & (ax < rr / 3),
        ], axis=1)
        m = masks[np.arange(len(y[s])), y[s]].astype(np.float32)[:, None]
        fg = rng.uniform(0.4, 1.0, (len(m), channels, 1, 1)).astype(np.float32)
        bg = rng.uniform(0.0, 0.5, (len(m), channels, 1, 1)).astype(np.float32)
        img = m * fg + (1 - m) * bg
        img += rng.normal(0, noise, img.shape).astype(np.float32)
        x[s] = np.clip(img, 0, 1)
    return split_and_normalise(f"shapes{size}", torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)),
                               SHAPE_CLASSES[:classes], val_fraction=val_fraction,
                               test_fraction=test_fraction, seed=seed)


def _stack(dataset, limit: int | None):
    """PIL/tensor dataset -> (x (N, C, H, W) uint8 pixels, y) without a DataLoader."""
    data = getattr(dataset, "data", None)
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = getattr(dataset, "labels", None)
    x = torch.as_tensor(np.asarray(data))
    if x.ndim == 3:  # MNIST family: (N, H, W)
        x = x.unsqueeze(1)
    elif x.shape[-1] in (1, 3):  # CIFAR: (N, H, W, C)
        x = x.permute(0, 3, 1, 2)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    if limit:
        x, y = x[:limit], y[:limit]
    if x.dtype != torch.uint8:
        raise DataError(f"{type(dataset).__name__}: pixels are {x.dtype}, not uint8")
    return x, y


def torchvision_dataset(name: str, *, root: str | Path = DEFAULT_CACHE, download: bool = True,
                        limit: int | None = None, val_fraction: float = 0.1, seed: int = 0) -> ImageData:
    """A torchvision dataset by name, downloaded into ``root``; DataError when it cannot be had."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, name)
    root = Path(root)
    try:
        train, test = ({"split": "train"}, {"split": "test"}) if name == "SVHN" else ({"train": True}, {"train": False})
        ds = cls(str(root), download=download, **train)
        official_test = cls(str(root), download=download, **test)
    except Exception as exc:  # URLError, RuntimeError("Dataset not found"), OSError...
        raise DataError(
            f"{name}: not found in {root} and could not be downloaded ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:120] if str(exc) else 'no detail'}); "
            f"copy the files there or set CNNSEARCH_DATA") from None
    x, y = _stack(ds, limit)
    classes = getattr(ds, "classes", None) or [str(c) for c in range(int(y.max()) + 1)]
    return split_and_normalise(name, x, y, classes, val_fraction=val_fraction, test_fraction=0.0, seed=seed,
                               test=_stack(official_test, limit))


def image_folder(path: str | Path, *, size: int | None = None, val_fraction: float = 0.2,
                 test_fraction: float = 0.2, seed: int = 0, channels: int = 3) -> ImageData:
    """A user's photos in ImageFolder layout (one sub-folder per class): each resized on its
    short side to ``size`` (bilinear, aspect kept) and centre-cropped to ``size`` x ``size``,
    as torchvision's Resize(size) + CenterCrop(size) do (default size: the median short
    side, clamped to [8, 64]). Held as uint8 pixels."""
    from torchvision.datasets import ImageFolder

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"folder:{path}: no such directory")
    try:
        folder = ImageFolder(str(path))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"folder:{path}: {exc}") from None
    if len(folder.classes) < 2:
        raise DataError(f"folder:{path}: found {len(folder.classes)} class folder(s); need at least 2")
    if size is None:
        probe = spread(folder.samples, most=200)
        sides = [_read_image(path, file, read=lambda im: min(im.size)) for file, _ in probe]
        size = int(min(64, max(8, np.median(sides))))
    mode = "RGB" if channels == 3 else "L"
    # filled in place, no second copy; (N, H, W, C) as PIL gives each image, seen as (N, C, H, W):
    # the layout earlier versions' statistics were reduced over, so they come out the same
    x = np.empty((len(folder.samples), size, size, channels), np.uint8)
    for i, (file, _) in enumerate(folder.samples):
        arr = np.asarray(_read_image(path, file, read=lambda im: resize_and_crop(im.convert(mode), size)))
        x[i] = arr.reshape(size, size, channels)
    y = torch.tensor([label for _, label in folder.samples], dtype=torch.int64)
    return split_and_normalise(f"folder:{path.name}", torch.from_numpy(x).permute(0, 3, 1, 2), y, folder.classes,
                               val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)


def resize_and_crop(image, size: int):
    """``image`` (PIL) with its short side resized to ``size`` (bilinear), then its centre
    ``size`` x ``size``: torchvision's Resize(size) then CenterCrop(size) on a PIL image."""
    from PIL import Image

    w, h = image.size
    short, long = min(w, h), max(w, h)
    new_long = int(size * long / short)  # torchvision's rounding: truncated
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    image = image.resize((new_w, new_h), Image.BILINEAR)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def spread(items: list, *, most: int) -> list:
    """At most ``most`` of ``items``, evenly spaced from the first to the last: ImageFolder
    sorts its samples by class, so the first ``most`` could all be one class's."""
    if len(items) <= most:
        return list(items)
    return [items[round(i * (len(items) - 1) / (most - 1))] for i in range(most)]


def _read_image(path: Path, file: str, *, read):
    """``read(image)`` of one opened image file, or DataError naming the file for whatever
    PIL raises on a file it cannot decode: UnidentifiedImageError (an OSError: 0 bytes, not
    an image), OSError (truncated data), SyntaxError (a broken PNG chunk), ValueError, and
    DecompressionBombError (a header claiming too many pixels)."""
    from PIL import Image

    try:
        with Image.open(file) as im:
            return read(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"folder:{path}: cannot read {file} ({exc or type(exc).__name__})") from None


def _loader(name: str):
    return ({"digits": digits, "shapes": shapes}.get(name)
            or (image_folder if name.startswith("folder:") else None)
            or (torchvision_dataset if name in TORCHVISION else None))


def loader_options(name: str) -> tuple[str, ...] | None:
    """The options ``load_data(name, ...)`` accepts (None for an unknown dataset name)."""
    defaults = loader_defaults(name)
    return None if defaults is None else tuple(defaults)


def loader_defaults(name: str) -> dict | None:
    """Each option of ``load_data(name, ...)`` with its default (None for an unknown name):
    a recipe that writes a default out means the same as one that leaves it out."""
    import inspect

    loader = _loader(name)
    if loader is None:
        return None
    return {p.name: p.default for p in inspect.signature(loader).parameters.values() if p.kind == p.KEYWORD_ONLY}


def load_data(name: str, **options) -> ImageData:
    """``digits``, ``shapes``, ``folder:PATH`` or a torchvision name (CIFAR10, MNIST, ...)."""
    if name == "digits":
        return digits(**options)
    if name == "shapes":
        return shapes(**options)
    if name.startswith("folder:"):
        return image_folder(name[len("folder:"):], **options)
    if name in TORCHVISION:
        return torchvision_dataset(name, **options)
    raise DataError(f"dataset {name!r} is not one of digits, shapes, folder:PATH, "
                    f"{', '.join(TORCHVISION)}")


def augment(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 2,
            flip: bool = True) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip of a batch, on its own device."""
    n, _, h, w = x.shape
    device = x.device
    if flip:
        flips = torch.rand(n, device=device, generator=generator) < 0.5
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
    if pad:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        sx = torch.randint(0, 2 * pad + 1, (n,), device=device, generator=generator)
        sy = torch.randint(0, 2 * pad + 1, (n,), device=device, generator=generator)
        rows = (sy[:, None] + torch.arange(h, device=device)[None])  # (n, h)
        cols = (sx[:, None] + torch.arange(w, device=device)[None])  # (n, w)
        x = padded[torch.arange(n, device=device)[:, None, None, None],
                   torch.arange(x.shape[1], device=device)[None, :, None, None],
                   rows[:, None, :, None], cols[:, None, None, :]]
    return x
