"""Datasets: shapes, splits, normalisation, caching and one-sentence errors for missing or bad files."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from archsearch.cli.errors import run_cli
from archsearch.data.datasets import _read_fashion_mnist, load_dataset
from archsearch.errors import ArchsearchError, ConfigError, DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist is not installed",
)


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(blob))
    else:
        path.write_bytes(blob)


def write_fashion(root: Path, n_train: int, n_test: int, compress: bool = False) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), compress)
        write_idx(root / f"{stem}-labels-idx1-ubyte", np.arange(n) % 10, compress)


def write_cifar10(root: Path, per_batch: int) -> dict[str, np.ndarray]:
    """The real layout: dicts with byte keys, data uint8 N x 3072 (R plane, G plane, B plane)."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
        }
        with (root / name).open("wb") as fh:
            pickle.dump(batch, fh, protocol=2)
        written[name] = data
    return written


def one_sentence(message: str) -> bool:
    return "\n" not in message and message.endswith(".") and len(message) < 400


def test_digits_has_fixed_test_split_and_seeded_validation_split() -> None:
    a = load_dataset({"name": "digits"}, seed=0)
    b = load_dataset({"name": "digits"}, seed=1)
    assert a.shape == (1, 8, 8) and a.num_classes == 10
    assert len(a.train_y) + len(a.val_y) + len(a.test_y) == 1797
    assert len(a.test_y) == 359 and len(a.val_y) == round(1438 * 0.1)
    # The carved test set is the same for every seed (up to each run's normalisation); the
    # validation split is not.
    assert torch.equal(a.test_y, b.test_y)
    assert torch.allclose(a.test_x * a.std[0] + a.mean[0], b.test_x * b.std[0] + b.mean[0], atol=1e-4)
    assert not torch.equal(a.val_y, b.val_y)
    assert a.augment.flip is False


@needs_fashion
def test_fashion_mnist_loads_the_debian_files() -> None:
    data = load_dataset({"name": "fashion_mnist", "dir": str(FASHION_DIR), "val_fraction": 0.1})
    assert data.shape == (1, 28, 28) and data.num_classes == 10
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (54000, 6000, 10000)
    assert data.train_x.dtype == torch.float32 and data.train_x.shape == (54000, 1, 28, 28)
    assert torch.bincount(data.test_y).tolist() == [1000] * 10
    # Fashion-MNIST's mean pixel is about 73 of 255; normalised training data has mean 0, std 1.
    assert 70 < data.mean[0] < 76
    assert abs(data.train_x.mean().item()) < 1e-3 and abs(data.train_x.std().item() - 1) < 1e-3


def test_fashion_mnist_reads_uncompressed_and_gzipped_idx(tmp_path: Path) -> None:
    for compress in (False, True):
        root = tmp_path / str(compress)
        write_fashion(root, n_train=50, n_test=20, compress=compress)
        data = load_dataset({"name": "fashion_mnist", "dir": str(root), "val_fraction": 0.2})
        assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (40, 10, 20)
        assert data.test_y.tolist() == [i % 10 for i in range(20)]


def test_cifar10_loads_batches_in_the_real_pickle_format(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path / "cifar-10-batches-py", per_batch=8)
    # The parent of the extracted directory is accepted too.
    data = load_dataset({"name": "cifar10", "dir": str(tmp_path), "val_fraction": 0.25}, seed=3)
    assert data.shape == (3, 32, 32) and data.num_classes == 10
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (30, 10, 8)
    # Undoing the normalisation gives back the pixels, with the R, G, B planes in order.
    mean = torch.tensor(data.mean)[:, None, None]
    std = torch.tensor(data.std)[:, None, None]
    first_test = data.test_x[0] * std + mean
    expected = torch.from_numpy(written["test_batch"][0].reshape(3, 32, 32).astype(np.float32))
    assert torch.allclose(first_test, expected, atol=1e-3)


def test_synthetic_has_the_requested_shape_and_classes() -> None:
    cfg = {"name": "synthetic", "shape": [3, 12, 10], "num_classes": 5, "train_size": 100, "test_size": 30}
    data = load_dataset({**cfg, "val_fraction": 0.2})
    assert data.shape == (3, 12, 10) and data.num_classes == 5
    assert data.train_x.shape == (80, 3, 12, 10) and data.test_x.shape == (30, 3, 12, 10)
    assert set(data.test_y.tolist()) == set(range(5))


def test_subset_count_and_fraction_thin_training_images_only() -> None:
    full = load_dataset({"name": "digits", "val_fraction": 0.25}, seed=7)
    counted = load_dataset({"name": "digits", "val_fraction": 0.25, "subset": 300}, seed=7)
    fraction = load_dataset({"name": "digits", "val_fraction": 0.25, "subset": 0.5}, seed=7)
    assert len(full.train_y) == 1078 and len(counted.train_y) == 300 and len(fraction.train_y) == 539
    # The validation split does not move with the subset, so runs are scored on the same images.
    assert torch.equal(full.val_y, counted.val_y) and torch.equal(full.val_y, fraction.val_y)
    assert len(full.val_y) == 360


def test_subset_larger_than_the_training_images_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"data.subset=5000 .* only 1294 training images"):
        load_dataset({"name": "digits", "subset": 5000})
    with pytest.raises(ConfigError, match=r"data\.subset=1\.5"):
        load_dataset({"name": "digits", "subset": 1.5})


def test_val_fraction_outside_zero_one_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"data\.val_fraction must be a number strictly between 0 and 1"):
        load_dataset({"name": "digits", "val_fraction": 1.0})


def test_unknown_dataset_name_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="allowed: digits, fashion_mnist, cifar10, synthetic"):
        load_dataset({"name": "mnist"})


def test_missing_fashion_mnist_names_the_path_and_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset({"name": "fashion_mnist", "dir": str(tmp_path / "nowhere")})
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert one_sentence(message)


def test_missing_dataset_exits_2_with_one_line_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: load_dataset({"name": "cifar10", "dir": str(tmp_path)}))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: CIFAR-10 not found:") and err.count("\n") == 1
    assert "data_batch_1" in err and "cs.toronto.edu" in err


def test_malformed_idx_files_are_data_errors(tmp_path: Path) -> None:
    write_fashion(tmp_path, n_train=20, n_test=10)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 12)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte is not an unsigned-byte IDX file"):
        load_dataset({"name": "fashion_mnist", "dir": str(tmp_path)})
    write_fashion(tmp_path, n_train=20, n_test=10)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="is truncated") as info:
        load_dataset({"name": "fashion_mnist", "dir": str(tmp_path)})
    assert one_sentence(str(info.value))


def test_corrupt_gzip_is_a_data_error(tmp_path: Path) -> None:
    write_fashion(tmp_path, n_train=20, n_test=10, compress=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot be read"):
        load_dataset({"name": "fashion_mnist", "dir": str(tmp_path)})


def test_malformed_cifar10_batches_are_data_errors(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_batch=4)
    (tmp_path / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_3 is not a CIFAR-10 python batch"):
        load_dataset({"name": "cifar10", "dir": str(tmp_path)})
    with (tmp_path / "data_batch_3").open("wb") as fh:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}, fh)
    with pytest.raises(DataError, match=r"shape \(4, 100\)"):
        load_dataset({"name": "cifar10", "dir": str(tmp_path)})


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_cifar10_reader_refuses_pickles_that_would_run_code(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_batch=4)
    with (tmp_path / "test_batch").open("wb") as fh:
        pickle.dump({b"data": _Exploit(), b"labels": []}, fh)
    with pytest.raises(DataError, match="is not allowed in a CIFAR-10 batch"):
        load_dataset({"name": "cifar10", "dir": str(tmp_path)})


def test_data_errors_are_archsearch_errors() -> None:
    assert issubclass(DataError, ArchsearchError)


@needs_fashion
def test_files_are_read_once_per_process() -> None:
    cfg = {"name": "fashion_mnist", "dir": str(FASHION_DIR), "subset": 100}
    load_dataset(cfg)
    hits = _read_fashion_mnist.cache_info().hits
    load_dataset(cfg, seed=5)
    assert _read_fashion_mnist.cache_info().hits == hits + 1


def test_shipped_config_and_augment_settings_are_read() -> None:
    from archsearch.data.settings import config_file

    cfg = config_file("synthetic")  # the file with its defaults list (data/base) composed in
    cfg["augment"]["crop_padding"] = 2
    data = load_dataset(cfg)
    assert data.augment.crop_padding == 2 and data.shape == (1, 8, 8)
    cfg["augment"]["shear"] = 3
    with pytest.raises(ConfigError, match=r"data\.augment has unknown key"):
        load_dataset(cfg)


# --------------------------------------------------------------------------- data=arrays


def test_arrays_from_npz_channels_last_uint8(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 6, 7, 3), dtype=np.uint8)
    np.savez(tmp_path / "mine.npz", x=x, y=np.arange(50) % 5, test_x=x[:8], test_y=np.arange(8) % 5)
    data = load_dataset({"name": "arrays", "path": str(tmp_path / "mine.npz")}, seed=0)
    assert data.name == "mine" and data.shape == (3, 6, 7) and data.num_classes == 5
    assert (len(data.train_y) + len(data.val_y), len(data.test_y)) == (50, 8)
    expected = (
        torch.from_numpy(x[:8].transpose(0, 3, 1, 2)).float() - torch.tensor(data.mean)[:, None, None]
    ) / (torch.tensor(data.std)[:, None, None])
    assert torch.allclose(data.test_x, expected, atol=1e-5)
    grey = load_dataset({"name": "arrays", "path": str(tmp_path / "mine.npz"), "channels": 1}, seed=0)
    assert grey.shape == (1, 6, 7)


def test_arrays_from_npy_pairs(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((30, 1, 5, 5)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.arange(30) % 3)
    cfg = {"name": "arrays", "path": str(tmp_path / "x.npy"), "labels": str(tmp_path / "y.npy")}
    data = load_dataset(cfg, seed=0)
    assert data.shape == (1, 5, 5) and data.num_classes == 3 and len(data.test_y) == 0
    rgb = load_dataset({**cfg, "channels": 3}, seed=0)
    assert rgb.shape == (3, 5, 5)


@pytest.mark.parametrize(
    ("arrays", "extra", "fragment"),
    [
        ({"x": np.zeros((4, 5, 5)), "y": np.array([0, 1, 2, 7])}, {"num_classes": 3}, "y must lie in 0..2"),
        ({"x": np.zeros((4, 5, 5)), "y": np.array([0, 1, 0])}, {}, "x holds 4 images but y has shape (3,)"),
        ({"x": np.full((4, 5, 5), np.inf), "y": np.array([0, 1, 0, 1])}, {}, "NaN or infinite"),
        ({"x": np.zeros((4, 2, 5, 5)), "y": np.array([0, 1, 0, 1])}, {"channels": 1}, "cannot be converted"),
        ({"images": np.zeros((4, 5, 5)), "y": np.array([0, 1, 0, 1])}, {}, "has no array 'x'"),
        (
            {"x": np.zeros((4, 5, 5)), "y": np.array([0, 1, 0, 1]), "test_x": np.zeros((2, 5, 5))},
            {},
            "together",
        ),
    ],
)
def test_arrays_refuse_bad_data_in_one_sentence(
    tmp_path: Path, arrays: dict[str, np.ndarray], extra: dict[str, object], fragment: str
) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as info:
        load_dataset({"name": "arrays", "path": str(tmp_path / "bad.npz"), **extra}, seed=0)
    assert fragment in str(info.value) and one_sentence(str(info.value))


def test_arrays_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.path must name"):
        load_dataset({"name": "arrays"}, seed=0)
    with pytest.raises(ConfigError, match=r"data\.labels must name"):
        load_dataset({"name": "arrays", "path": str(tmp_path / "x.npy")}, seed=0)
    with pytest.raises(ConfigError, match=r"must end in \.npz or \.npy"):
        load_dataset({"name": "arrays", "path": str(tmp_path / "x.csv")}, seed=0)


def test_python_load_dataset_finds_fashion_mnist_where_the_cli_does() -> None:
    """``load_dataset({"name": "fashion_mnist"})`` reads the files from the ``dir`` that
    conf/data/fashion_mnist.yaml names, as ``data=fashion_mnist`` does; a ``dir`` given wins."""
    from archsearch.data.settings import DataSettings, FashionMnistOptions

    assert DataSettings.from_mapping({"name": "fashion_mnist"}).options == (
        DataSettings.from_config("fashion_mnist").options
    )
    given = DataSettings.from_mapping({"name": "fashion_mnist", "dir": "/x"})
    assert given.options == FashionMnistOptions(dir="/x")


def test_datasets_name_their_classes() -> None:
    """Dataset.class_names maps a label (a prediction's argmax) to what it means."""
    import numpy as np

    import archsearch as A
    from archsearch.data.datasets import FASHION_MNIST_CLASSES

    assert A.load_dataset("digits").class_names == tuple(str(i) for i in range(10))
    assert FASHION_MNIST_CLASSES[0] == "T-shirt/top" and FASHION_MNIST_CLASSES[9] == "Ankle boot"
    x, y = np.zeros((20, 1, 4, 4), "float32"), np.arange(20) % 2
    assert A.dataset_from_arrays("m", x, y, class_names=["cat", "dog"]).class_names == ("cat", "dog")
    assert A.dataset_from_arrays("m", x, y).class_names == ("0", "1")
    with pytest.raises(A.DataError, match="class_names names 3 classes, but the labels make 2"):
        A.dataset_from_arrays("m", x, y, class_names=["a", "b", "c"])
