"""Image folders, their memory-mapped cache, torchvision datasets, and sweeps on the user's data."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import archsearch as A
from archsearch.data import image_folder
from archsearch.data.datasets import load_dataset
from archsearch.data.images import ImageArray
from archsearch.errors import ConfigError, DataError
from archsearch.testing import FixedCostFit
from archsearch.train.settings import TrainerSettings

REPO = Path(__file__).resolve().parents[2]


def write_folder(root: Path, per_class: int = 12, classes: int = 3, corrupt: bool = False) -> Path:
    """Class folders of PNG and JPEG images of mixed sizes, one of them grey, each class its own tint."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = (rng.random((14 + i % 4, 12 + i % 3, 3)) * 60 + c * 90).astype(np.uint8)
            image = Image.fromarray(pixels)
            if c == 0 and i == 1:
                image = image.convert("L")
            image.save(folder / f"img_{i}.{'png' if i % 2 else 'jpg'}")
    if corrupt:
        (root / "class_1" / "broken.png").write_bytes(b"\x89PNG but not really")
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "images")


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts how many times images are decoded (one entry per decoding pass, its file count)."""
    calls: list[int] = []
    real = image_folder.decode_into

    def counting(paths: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(paths))
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(image_folder, "decode_into", counting)
    return calls


def load(folder: Path, cache: Path, **kwargs: Any) -> A.Dataset:
    kwargs.setdefault("size", [10, 10])
    return A.dataset_from_folder(folder, cache_dir=cache, workers=1, **kwargs)


def test_folder_becomes_a_normalised_memory_mapped_dataset(folder: Path, tmp_path: Path) -> None:
    data = load(folder, tmp_path / "cache")
    assert data.shape == (3, 10, 10) and data.num_classes == 3 and data.name == "images"
    assert data.class_names == ("class_0", "class_1", "class_2")  # the class folders, sorted
    assert len(data.train_y) + len(data.val_y) + len(data.test_y) == 36
    assert isinstance(data.train_x, ImageArray) and isinstance(data.train_x.images, np.memmap)
    train = data.train_x[:]
    assert train.dtype == torch.float32 and train.shape == (len(data.train_y), 3, 10, 10)
    # Statistics come from the training split, so it is normalised exactly.
    assert torch.allclose(train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(train.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    assert set(data.train_y.tolist()) == {0, 1, 2}
    grey = load(folder, tmp_path / "cache", channels=1)
    assert grey.shape == (1, 10, 10)


def test_second_load_reads_the_cache_without_decoding(
    folder: Path, tmp_path: Path, decodes: list[int]
) -> None:
    first = load(folder, tmp_path / "cache")
    second = load(folder, tmp_path / "cache")
    assert decodes == [36]
    assert torch.equal(first.val_x[:], second.val_x[:]) and torch.equal(first.test_y, second.test_y)
    (entry,) = (tmp_path / "cache").iterdir()
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["classes"] == ["class_0", "class_1", "class_2"] and manifest["skipped"] == []
    assert not [p for p in entry.iterdir() if p.name.endswith(".tmp")]


def test_touching_a_file_or_changing_settings_rebuilds(
    folder: Path, tmp_path: Path, decodes: list[int]
) -> None:
    load(folder, tmp_path / "cache")
    some = folder / "class_2" / "img_3.png"
    os.utime(some, ns=(some.stat().st_atime_ns, some.stat().st_mtime_ns + 10**9))
    load(folder, tmp_path / "cache")
    load(folder, tmp_path / "cache", size=[8, 8])
    load(folder, tmp_path / "cache", size=[8, 8])
    assert decodes == [36, 36, 36]


def test_a_truncated_cache_is_rebuilt_not_used(folder: Path, tmp_path: Path, decodes: list[int]) -> None:
    before = load(folder, tmp_path / "cache").train_x[:]
    (entry,) = (tmp_path / "cache").iterdir()
    pixels = entry / "x.npy"
    pixels.write_bytes(pixels.read_bytes()[:-100])
    again = load(folder, tmp_path / "cache")
    assert decodes == [36, 36]
    assert torch.equal(before, again.train_x[:])


def test_parallel_decoding_matches_one_process(folder: Path, tmp_path: Path) -> None:
    one = load(folder, tmp_path / "one")
    two = A.dataset_from_folder(folder, size=[10, 10], cache_dir=tmp_path / "two", workers=2)
    assert torch.equal(one.train_x[:], two.train_x[:]) and torch.equal(one.train_y, two.train_y)


def test_corrupt_image_is_named_or_skipped_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_folder(tmp_path / "images", corrupt=True)
    with pytest.raises(DataError, match=r"broken\.png cannot be read .*data\.skip_bad=true"):
        load(root, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npy"))
    data = load(root, tmp_path / "cache", skip_bad=True)
    assert len(data.train_y) + len(data.val_y) + len(data.test_y) == 36
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().err


def test_train_val_test_folders_are_the_splits(tmp_path: Path) -> None:
    for split, count in (("train", 10), ("val", 3), ("test", 4)):
        write_folder(tmp_path / "images" / split, per_class=count, classes=2)
    data = load(tmp_path / "images", tmp_path / "cache", subset=8)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (8, 6, 8)


def test_without_size_every_image_must_match_the_first(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"set data\.size=\[H, W\]"):
        load(folder, tmp_path / "cache", size=None)


@pytest.mark.parametrize(
    ("layout", "fragment"),
    [("missing", "does not exist"), ("flat", "has no class folders"), ("one", "needs at least two")],
)
def test_folder_layout_errors(tmp_path: Path, layout: str, fragment: str) -> None:
    root = tmp_path / "images"
    if layout == "flat":
        root.mkdir()
        Image.new("RGB", (4, 4)).save(root / "a.png")
    elif layout == "one":
        write_folder(root, classes=1)
    with pytest.raises(DataError, match=fragment):
        load(root, tmp_path / "cache")


def test_bad_settings_are_config_errors(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.channels must be 1"):
        load(folder, tmp_path / "cache", channels=4)
    with pytest.raises(ConfigError, match=r"data\.size must be"):
        load(folder, tmp_path / "cache", size=[0, 3])


def test_trainer_gives_the_same_result_on_the_cache_and_on_tensors(folder: Path, tmp_path: Path) -> None:
    cached = load(folder, tmp_path / "cache")
    in_memory = dataclasses.replace(
        cached, train_x=cached.train_x[:], val_x=cached.val_x[:], test_x=cached.test_x[:]
    )
    spec = A.load_spec(REPO / "conf" / "model" / "fire_digits.yaml")
    spec = spec.retarget(input=cached.shape, num_classes=cached.num_classes)
    settings = TrainerSettings(epochs=2, batch_size=8, threads=1)
    results = []
    for data in (cached, in_memory):
        torch.manual_seed(0)
        results.append(A.fit(A.build(spec), data, settings, seed=0, evaluate_test=True))
    a, b = results
    assert a.val_acc_last == b.val_acc_last and a.test_acc == b.test_acc
    assert a.history[-1]["train_loss"] == pytest.approx(b.history[-1]["train_loss"], rel=1e-5)


def test_a_pickled_view_reopens_the_map_instead_of_copying(folder: Path, tmp_path: Path) -> None:
    data = load(folder, tmp_path / "cache")
    blob = pickle.dumps(data.train_x)
    assert len(blob) < 2000
    assert torch.equal(pickle.loads(blob)[:], data.train_x[:])


def test_run_search_takes_a_folder_dataset(folder: Path, tmp_path: Path) -> None:
    data = load(folder, tmp_path / "cache")
    settings = A.SearchSettings(
        study=A.StudySettings(name="folder", n_trials=2),
        trainer=A.TrainerSettings(epochs=1, threads=1),
        tracking=A.TrackingSettings(enabled=False),
        export=A.ExportSettings(dir=str(tmp_path / "results"), plots=False),
    )
    result = A.run_search(
        A.load_space("fire"), data, settings, storage=f"sqlite:///{tmp_path}/s.db", fit_fn=FixedCostFit(0.0)
    )
    assert result.members and all(m["spec"]["input"] == [3, 10, 10] for m in result.members)


# --------------------------------------------------------------------------- torchvision


def test_torchvision_missing_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(
        DataError, match=r"needs torchvision, which is not installed; .*archsearch\[torchvision\]"
    ):
        load_dataset({"source": "torchvision", "name": "CIFAR10", "root": "/nowhere"})


class _FakeCIFAR:
    """Like torchvision's CIFAR10: .data N x 32 x 32 x 3 uint8, .targets a list, train/download."""

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        if not Path(root).is_dir():
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
        n = 40 if train else 10
        self.data = np.random.default_rng(int(train)).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
        self.targets = [i % 4 for i in range(n)]
        self.classes = ["a", "b", "c", "d"]


class _FakeFolderLike:
    """A class without train/split that yields (PIL image, label) pairs of varying sizes."""

    def __init__(self, root: str) -> None:
        self.sizes = [(6 + i % 3, 7) for i in range(30)]

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return Image.new("L", self.sizes[i], color=i * 8), i % 2


@pytest.fixture
def fake_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    package, datasets = types.ModuleType("torchvision"), types.ModuleType("torchvision.datasets")
    datasets.CIFAR10 = _FakeCIFAR  # type: ignore[attr-defined]
    datasets.Folderish = _FakeFolderLike  # type: ignore[attr-defined]
    package.datasets = datasets  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)


def test_torchvision_class_with_data_and_targets(fake_torchvision: None, tmp_path: Path) -> None:
    data = load_dataset({"source": "torchvision", "name": "CIFAR10", "root": str(tmp_path)})
    assert data.shape == (3, 8, 8) and data.num_classes == 4
    assert (len(data.train_y) + len(data.val_y), len(data.test_y)) == (40, 10)
    with pytest.raises(DataError, match=r"cannot be read from .*nowhere.*data\.download=true"):
        load_dataset({"source": "torchvision", "name": "CIFAR10", "root": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="'Nope' is not a dataset class"):
        load_dataset({"source": "torchvision", "name": "Nope", "root": str(tmp_path)})


def test_torchvision_class_read_item_by_item(fake_torchvision: None, tmp_path: Path) -> None:
    cfg = {"source": "torchvision", "name": "Folderish", "root": str(tmp_path), "size": [5, 5], "channels": 3}
    data = load_dataset(cfg)
    assert data.shape == (3, 5, 5) and data.num_classes == 2
    assert len(data.test_y) == 6 and len(data.train_y) + len(data.val_y) == 24


# --------------------------------------------------------------------------- the command line


def _sweep(cli: Any, cwd: Path, *args: str) -> Any:
    cwd.mkdir()
    done = cli.run(
        cwd,
        "+sweep=fire",
        "study.n_trials=2",
        "trainer.epochs=1",
        "trainer.threads=1",
        "export.plots=false",
        *args,
    )
    assert done.returncode == 0, done.stderr
    assert "trial    1  complete" in done.stdout
    return done


@pytest.fixture
def repo_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))


@pytest.mark.slow
def test_cli_sweep_on_an_image_folder(tmp_path: Path, archsearch_cli: Any, repo_on_path: None) -> None:
    root = write_folder(tmp_path / "images", corrupt=True)
    args = (f"data.dir={root}", "data.size=[16,16]", f"data.cache_dir={tmp_path}/cache", "data.skip_bad=true")
    done = _sweep(archsearch_cli, tmp_path / "run", "data=image_folder", *args)
    assert "skipped 1 unreadable image(s)" in done.stderr
    assert (tmp_path / "run" / "results" / "fire" / "pareto.csv").exists()


@pytest.mark.slow
def test_cli_sweep_on_arrays(tmp_path: Path, archsearch_cli: Any, repo_on_path: None) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 12, 12, 3), dtype=np.uint8)
    np.savez(tmp_path / "mine.npz", x=x, y=np.arange(60) % 3, test_x=x[:12], test_y=np.arange(12) % 3)
    _sweep(archsearch_cli, tmp_path / "run", "data=arrays", f"data.path={tmp_path}/mine.npz")
