"""Photo folders as the issue asks: aspect kept (short side resized, centre cropped, as
torchvision's Resize + CenterCrop), uint8 pixels in memory that ``prepare`` normalises per
batch to exactly the float data earlier versions held, class counts, balanced accuracy
(checked against scikit-learn), one error line for a corrupt file, and an export whose usage
crops as training did."""

import ast
import copy
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnsearch import ArchSpec, DataError, build
from cnnsearch.data import load_data, pixel_statistics, resize_and_crop
from cnnsearch.export import save_weights, to_source
from cnnsearch.train import TrainConfig, evaluate, evaluate_metrics, train

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


def test_uint8_photos_train_to_the_same_numbers_as_their_float_copies(tmp_path):
    _folder(tmp_path)
    data = load_data(f"folder:{tmp_path}", size=8)
    floats = replace(data, x_train=data.prepare(data.x_train), x_val=data.prepare(data.x_val),
                     x_test=data.prepare(data.x_test))
    spec = ArchSpec.from_dict({"input": [3, 8, 8], "num_classes": 2, "head": {"pool": "avg"},
                               "blocks": [{"out_channels": 4, "kernel_size": 3, "padding": 1, "norm": "batch"}]})
    torch.manual_seed(0)
    start = build(spec)
    runs = []
    for d in (data, floats):
        model = copy.deepcopy(start)
        result = train(model, d, TrainConfig(epochs=2, batch_size=8, device="cpu", augment=True, lr=0.05))
        test = evaluate_metrics(model, d.x_test, d.y_test, prepare=d.prepare)
        runs.append((result.epochs, model.state_dict(), test))
    (epochs_u8, weights_u8, test_u8), (epochs_f, weights_f, test_f) = runs
    strip = [(e.train_loss, e.val_loss, e.val_accuracy, e.val_balanced_accuracy) for e in epochs_u8]
    assert strip == [(e.train_loss, e.val_loss, e.val_accuracy, e.val_balanced_accuracy) for e in epochs_f]
    assert all(torch.equal(weights_u8[k], weights_f[k]) for k in weights_u8) and test_u8 == test_f


def test_class_counts_per_split(tmp_path):
    _folder(tmp_path)
    data = load_data(f"folder:{tmp_path}", size=8, val_fraction=0.2, test_fraction=0.2)
    counts = data.class_counts()
    # stratified: round(30 x 0.2) = 6 and round(3 x 0.2) = 1 to validation and test each
    assert counts == {"train": {"many": 18, "few": 1}, "val": {"many": 6, "few": 1}, "test": {"many": 6, "few": 1}}
    assert list(counts["train"]) == ["few", "many"] == list(data.classes)  # class order (sorted folders)
    assert replace(data, x_test=None, y_test=None).class_counts() == {"train": counts["train"], "val": counts["val"]}


class Scripted(nn.Module):
    """Predicts ``predictions[i]`` for the image whose first pixel is i."""

    def __init__(self, predictions, classes):
        super().__init__()
        self.logits = nn.functional.one_hot(torch.as_tensor(predictions), classes).float()

    def forward(self, x):
        return self.logits[x[:, 0, 0, 0].long()]


@pytest.mark.parametrize("batch_size", [4, 1024])  # counts gathered over several batches, and one
def test_balanced_accuracy_is_scikit_learns(batch_size):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 3], [20, 2, 5])  # class 2 absent from the labels, class 0 ten times class 1
    predictions = np.where(rng.random(len(labels)) < 0.6, labels, rng.integers(0, 4, len(labels)))
    predictions[:3] = 2  # predicted though absent: sklearn leaves it out (and warns)
    x = torch.arange(len(labels), dtype=torch.float32)[:, None, None, None]
    loss, accuracy, balanced = evaluate_metrics(Scripted(predictions, 4), x, torch.as_tensor(labels),
                                                batch_size=batch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
        expected = balanced_accuracy_score(labels, predictions)
    assert balanced == pytest.approx(expected, rel=1e-12) and balanced != pytest.approx(accuracy)
    assert accuracy == accuracy_score(labels, predictions)
    assert evaluate(Scripted(predictions, 4), x, torch.as_tensor(labels), batch_size=batch_size) == (loss, accuracy)


def test_training_reports_validation_balanced_accuracy(tmp_path):
    from sklearn.metrics import balanced_accuracy_score

    _folder(tmp_path, counts=(("many", 40), ("few", 4)))
    data = load_data(f"folder:{tmp_path}", size=8, val_fraction=0.25)
    spec = ArchSpec.from_dict({"input": [3, 8, 8], "num_classes": 2, "head": {"pool": "avg"}, "blocks": []})
    torch.manual_seed(0)
    model = build(spec)
    result = train(model, data, TrainConfig(epochs=2, batch_size=8, device="cpu", lr=0.1))
    model.eval()
    with torch.no_grad():
        predicted = model(data.prepare(data.x_val)).argmax(1)
    assert result.balanced_accuracy == result.epochs[-1].val_balanced_accuracy
    assert result.balanced_accuracy == pytest.approx(balanced_accuracy_score(data.y_val, predicted), rel=1e-12)
    assert result.to_dict()["balanced_accuracy"] == result.balanced_accuracy


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


def test_exported_usage_resizes_and_crops_a_folders_photo(tmp_path, monkeypatch, capsys):
    from torchvision.transforms.functional import to_tensor

    (tmp_path / "photos").mkdir()
    _folder(tmp_path / "photos")
    data = load_data(f"folder:{tmp_path / 'photos'}", size=8)
    spec = ArchSpec.from_dict({"input": [3, 8, 8], "num_classes": 2, "head": {"pool": "avg"},
                               "blocks": [{"out_channels": 4, "kernel_size": 3, "padding": 1}]})
    torch.manual_seed(0)
    built = build(spec).eval()
    source = to_source(spec, data=data.description())
    doc = ast.get_docstring(ast.parse(source))
    assert "    image = to_tensor(CenterCrop(8)(Resize(8)(image)))" in doc
    monkeypatch.chdir(tmp_path)
    save_weights(built, "weights.safetensors")
    photo = tmp_path / "photos" / "many" / "1.jpg"  # 64 x 20: a wide one
    Image.open(photo).save("image.png")
    lines = doc.splitlines()
    snippet = "\n".join(line[4:] for line in lines[lines.index(next(x for x in lines if x.startswith("    "))):])
    namespace = {}
    exec(compile(source, "exported.py", "exec"), namespace)  # our own generated file
    exec(compile(snippet, "snippet", "exec"), namespace)
    pixels = torch.from_numpy(np.array(resize_and_crop(Image.open("image.png").convert("RGB"), 8))).permute(2, 0, 1)
    assert torch.equal(namespace["image"], to_tensor(resize_and_crop(Image.open("image.png").convert("RGB"), 8)))
    with torch.no_grad():  # the export's input, normalised inside, is what training's prepare() gave
        expected = built(data.prepare(pixels[None].contiguous()))
    assert torch.allclose(namespace["model"](namespace["image"][None]), expected, atol=1e-5)
    assert capsys.readouterr().out == data.classes[expected.argmax(1).item()] + "\n"
    squared = to_source(spec, data={**data.description(), "name": "shapes8"})
    assert "CenterCrop" not in squared and ".resize((8, 8), Image.BILINEAR)" in squared


def test_finalize_scores_a_photo_folder_and_records_test_balanced_accuracy(tmp_path):
    import statistics

    from cnnsearch.finalize import finalize
    from cnnsearch.recipe import load_recipe
    from tests.study_helpers import load, run_recipe, write_recipe

    (tmp_path / "photos").mkdir()
    _folder(tmp_path / "photos")
    path = write_recipe(tmp_path, trials=1, epochs=1, extra="[data]\nsize = 8\n")
    path.write_text(path.read_text().replace('dataset = "digits"', f'dataset = "folder:{tmp_path / "photos"}"'))
    recipe = load_recipe(path)
    study = run_recipe(recipe, until=1)
    _, final = finalize(study, recipe, which="0", epochs=1, seeds=2)
    balanced = final["test_balanced_accuracies"]
    assert len(balanced) == 2 and all(0.0 <= b <= 1.0 for b in balanced)
    assert final["test_balanced_accuracy_mean"] == statistics.fmean(balanced)
    assert load(path).trials[0].user_attrs["final"] == final  # stored on the trial


def test_show_and_the_search_line_give_the_class_counts_and_flag_an_imbalance(tmp_path, capsys):
    import json

    from cnnsearch.cli import main
    from cnnsearch.runner import data_line

    (tmp_path / "photos").mkdir()
    _folder(tmp_path / "photos", counts=(("many", 30), ("few", 3)))
    assert main(["show", f"folder:{tmp_path / 'photos'}", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    counts = shown["class_counts"]
    assert list(counts) == ["train", "val", "test"] and shown["classes"] == ["few", "many"]
    assert {c: sum(counts[s][c] for s in counts) for c in shown["classes"]} == {"few": 3, "many": 30}
    assert main(["show", f"folder:{tmp_path / 'photos'}"]) == 0
    text = capsys.readouterr().out
    assert "imbalanced: the largest class has 10.0x the images of the smallest" in text
    line = data_line(load_data(f"folder:{tmp_path / 'photos'}"))
    assert f"{counts['train']['few']}-{counts['train']['many']} per class in train (imbalanced:" in line
    assert "imbalanced" not in data_line(load_data("digits"))  # 104-110 per class
    assert main(["show", "digits"]) == 0
    assert "imbalanced" not in capsys.readouterr().out


def test_chunked_sums_stay_exact_past_float32_s_integers(monkeypatch):
    """65,793 pixels of 255 and one of 2 sum to 2^24 + 1, which float32 cannot hold: integer
    sums keep the std to float32's precision; float32 sums would miss it by 0.4%."""
    import cnnsearch.data as data_mod

    x = torch.full((65794,), 255, dtype=torch.uint8)
    x[0] = 2
    x = x.reshape(1, 1, 1, -1)
    monkeypatch.setattr(data_mod, "_WHOLE", 0)
    mean, std = pixel_statistics(x)
    exact = x.double() / 255
    assert torch.allclose(mean.double(), exact.mean(dim=(0, 2, 3)), rtol=1e-7, atol=0)
    assert torch.allclose(std.double(), exact.std(dim=(0, 2, 3)), rtol=1e-6, atol=0)
