"""DataSettings: parsing, one-sentence refusals, the loader table, and the round trip to overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import archsearch as A
from archsearch.checks import plain_fields
from archsearch.data.settings import (
    DATASETS,
    LOADERS,
    ArraysOptions,
    Augment,
    Cifar10Options,
    DataSettings,
    DigitsOptions,
    FashionMnistOptions,
    ImageFolderOptions,
    SyntheticOptions,
    TorchvisionOptions,
    base_mapping,
    config_file,
)
from archsearch.errors import ConfigError
from archsearch.resources import CONF_DIR

#: A value for each loader's required key, so every shipped config makes settings.
REQUIRED = {
    "image_folder": {"dir": "/data/photos"},
    "arrays": {"path": "/data/mine.npz"},
    "torchvision": {"root": "/r"},
}
SHIPPED = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))


def shipped(config: str, **changes: Any) -> DataSettings:
    """``data=CONFIG`` as the command line composes it, with the required keys and ``changes`` set."""
    return DataSettings.from_mapping(
        {**config_file(config), **REQUIRED.get(config, {}), **changes}, config=config
    )


# --------------------------------------------------------------------------- parsing


def test_the_defaults_are_digits_with_one_val_fraction() -> None:
    settings = DataSettings()
    assert (settings.name, settings.kind, settings.config) == ("digits", "digits", "digits")
    assert settings.val_fraction == 0.1 and settings.subset is None and settings.augment == Augment()
    assert settings.options == DigitsOptions()
    assert DataSettings.from_mapping(None) == DataSettings.from_mapping({}) == settings
    assert base_mapping() == {
        "val_fraction": 0.1,
        "subset": None,
        "augment": {"crop_padding": 0, "flip": False, "erase_p": 0.0},
    }


def test_a_mapping_becomes_typed_settings() -> None:
    settings = DataSettings.from_mapping(
        {
            "name": "image_folder",
            "dir": Path("/data/photos"),
            "size": 32,
            "channels": 1,
            "subset": 0.5,
            "augment": {"flip": True},
        }
    )
    assert settings.kind == "image_folder" and settings.subset == 0.5
    assert settings.options == ImageFolderOptions(dir="/data/photos", size=(32, 32), channels=1)
    assert settings.augment == Augment(flip=True)
    torchvision = DataSettings.from_mapping({"source": "torchvision", "name": "MNIST", "root": "/r"})
    assert (torchvision.kind, torchvision.name, torchvision.config) == ("torchvision", "MNIST", "torchvision")
    assert torchvision.options == TorchvisionOptions(root="/r")
    synthetic = DataSettings.from_mapping({"name": "synthetic", "shape": [3, 4, 5]})
    assert synthetic.options_as(SyntheticOptions).shape == (3, 4, 5)
    with pytest.raises(TypeError):
        synthetic.options_as(DigitsOptions)


def test_settings_are_frozen_and_hashable() -> None:
    settings = shipped("synthetic")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.subset = 3  # type: ignore[misc]
    assert hash(settings) == hash(shipped("synthetic"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_parses_and_reads_back_equal(name: str) -> None:
    settings = shipped(name)
    assert settings.config == name and isinstance(settings.options, LOADERS[settings.kind].options)
    assert DataSettings.from_mapping(settings.to_mapping(), config=name) == settings
    assert list(settings.to_mapping())[-3:] == ["val_fraction", "subset", "augment"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_state_only_what_differs_from_the_defaults(name: str) -> None:
    """val_fraction, subset and augment come from data/base (DataSettings' defaults); a file
    states one only where its dataset differs, and its loader keys agree with the loader's
    defaults, so ``load_dataset({"name": NAME})`` and ``data=NAME`` read the same files."""
    raw = yaml.safe_load((CONF_DIR / "data" / f"{name}.yaml").read_text())
    assert raw["defaults"] == ["base", "_self_"]
    base = base_mapping()
    for key in ("val_fraction", "subset"):
        assert raw.get(key, object()) != base[key], f"{name}.yaml restates {key}"
    for key, value in (raw.get("augment") or {}).items():
        assert value != base["augment"][key], f"{name}.yaml restates augment.{key}"
    options = plain_fields(LOADERS[raw.get("source") or raw["name"]].options())
    assert {key: value for key, value in raw.items() if key in options} == options


# --------------------------------------------------------------------------- refusals


BAD: list[tuple[Any, str]] = [
    ("digits", "data must be a mapping with keys name, source, val_fraction, subset, augment, got 'digits'."),
    ({"name": "mnist"}, f"data.name is 'mnist'; allowed: {', '.join(DATASETS)}."),
    ({"source": "kaggle", "name": "x"}, f"data.source is 'kaggle'; allowed: {', '.join(DATASETS)}."),
    ({"source": "torchvision", "name": 10, "root": "/r"}, "data.name must name the dataset, got 10."),
    (
        {"name": "digits", "dir": "/x"},
        "data has unknown key(s) dir; allowed: name, source, val_fraction, subset, augment, test_fraction.",
    ),
    ({"val_fraction": 1.0}, "data.val_fraction must be a number strictly between 0 and 1, got 1.0."),
    ({"val_fraction": "0.1"}, "data.val_fraction must be a number strictly between 0 and 1, got '0.1'."),
    ({"subset": "all"}, "data.subset must be a fraction in (0, 1] or an image count, got 'all'."),
    ({"subset": 0}, "data.subset must be a fraction in (0, 1] or an image count, got 0."),
    ({"subset": True}, "data.subset must be a fraction in (0, 1] or an image count, got True."),
    ({"subset": 1.5}, "data.subset=1.5 as a fraction must lie in (0, 1]."),
    ({"augment": "on"}, "data.augment must be a mapping with keys crop_padding, flip, erase_p, got 'on'."),
    (
        {"augment": {"shear": 3}},
        "data.augment has unknown key(s) shear; allowed: crop_padding, flip, erase_p.",
    ),
    ({"augment": {"crop_padding": -1}}, "data.augment.crop_padding must be an integer >= 0, got -1."),
    ({"augment": {"flip": "yes"}}, "data.augment.flip must be true or false, got 'yes'."),
    ({"augment": {"erase_p": 2}}, "data.augment.erase_p must be a number in [0, 1], got 2."),
    ({"test_fraction": 0}, "data.test_fraction must be a number strictly between 0 and 1, got 0."),
    (
        {"name": "fashion_mnist", "dir": ""},
        "data.dir must name the directory holding the fashion_mnist files.",
    ),
    ({"name": "cifar10", "dir": None}, "data.dir must name the directory holding the cifar10 files."),
    ({"name": "cifar10", "dir": 3}, "data.dir must be a path, got 3."),
    ({"name": "synthetic", "shape": [1, 8]}, "data.shape must be [channels, height, width], got [1, 8]."),
    ({"name": "synthetic", "num_classes": 1}, "data.num_classes must be an integer >= 2, got 1."),
    ({"name": "synthetic", "train_size": 0}, "data.train_size must be an integer >= 1, got 0."),
    ({"name": "synthetic", "test_size": 2.0}, "data.test_size must be an integer >= 1, got 2.0."),
    ({"name": "synthetic", "noise": -1}, "data.noise must be a number >= 0, got -1."),
    ({"name": "synthetic", "generator_seed": -3}, "data.generator_seed must be an integer >= 0, got -3."),
    ({"name": "image_folder"}, "data.dir must name the image folder (one subfolder per class)."),
    (
        {"name": "image_folder", "dir": "/p", "size": [0, 3]},
        "data.size must be null or [height, width] in pixels, got [0, 3].",
    ),
    (
        {"name": "image_folder", "dir": "/p", "channels": 4},
        "data.channels must be 1 (grey) or 3 (RGB), got 4.",
    ),
    (
        {"name": "image_folder", "dir": "/p", "workers": 0},
        "data.workers must be an integer >= 1 or null (one per core), got 0.",
    ),
    ({"name": "image_folder", "dir": "/p", "skip_bad": 1}, "data.skip_bad must be true or false, got 1."),
    (
        {"name": "image_folder", "dir": "/p", "cache_dir": ["/c"]},
        "data.cache_dir must be a path, got ['/c'].",
    ),
    ({"name": "arrays"}, "data.path must name a .npz file (keys x, y[, test_x, test_y]) or an .npy file."),
    ({"name": "arrays", "path": "/d/x.csv"}, "data.path must end in .npz or .npy, got /d/x.csv."),
    (
        {"name": "arrays", "path": "/d/x.npy"},
        "data.labels must name the .npy file of labels for data.path=/d/x.npy.",
    ),
    (
        {"name": "arrays", "path": "/d/x.npz", "num_classes": "abc"},
        "data.num_classes must be an integer >= 2 or null, got 'abc'.",
    ),
    (
        {"name": "arrays", "path": "/d/x.npz", "channels": 2},
        "data.channels must be null (as stored), 1 or 3, got 2.",
    ),
    (
        {"source": "torchvision", "name": "MNIST"},
        "data.root must name the directory holding the MNIST files.",
    ),
    (
        {"source": "torchvision", "name": "MNIST", "root": "/r", "download": "no"},
        "data.download must be true or false, got 'no'.",
    ),
]


@pytest.mark.parametrize(("raw", "message"), BAD)
def test_bad_input_is_one_sentence_naming_the_key(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        DataSettings.from_mapping(raw)
    assert str(info.value) == message


def test_settings_built_in_python_are_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"^data\.val_fraction must be a number strictly between 0 and 1"):
        DataSettings(val_fraction=2)
    with pytest.raises(ConfigError, match=r"^data\.options of a digits dataset must be a DigitsOptions"):
        DataSettings(options=ImageFolderOptions(dir="/p"))
    with pytest.raises(ConfigError, match=r"^data\.augment must be an Augment"):
        DataSettings(augment={"flip": True})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^data\.augment\.erase_p must be a number in \[0, 1\]"):
        Augment(erase_p=-0.5)


# --------------------------------------------------------------------------- the loader table


def test_the_loader_table_names_every_kind_with_its_options_and_function() -> None:
    assert DATASETS == (
        "digits",
        "fashion_mnist",
        "cifar10",
        "synthetic",
        "image_folder",
        "arrays",
        "torchvision",
    )
    options = {
        "digits": DigitsOptions,
        "fashion_mnist": FashionMnistOptions,
        "cifar10": Cifar10Options,
        "synthetic": SyntheticOptions,
        "image_folder": ImageFolderOptions,
        "arrays": ArraysOptions,
        "torchvision": TorchvisionOptions,
    }
    assert {kind: loader.options for kind, loader in LOADERS.items()} == options
    for loader in LOADERS.values():
        assert dataclasses.is_dataclass(loader.options) and loader.options.__dataclass_params__.frozen  # type: ignore[attr-defined]
        loader.options()  # every key has a default
        assert callable(loader.load())


def test_the_table_loads_the_dataset_its_settings_describe() -> None:
    settings = DataSettings.from_mapping({"name": "synthetic", "shape": [2, 6, 6], "num_classes": 3})
    data = LOADERS["synthetic"].load()(settings, 0)
    assert data.shape == (2, 6, 6) and data.num_classes == 3 and data.name == "synthetic"
    assert len(data.val_y) == round(512 * settings.val_fraction)


# --------------------------------------------------------------------------- load_dataset from Python


def test_load_dataset_takes_a_mapping_a_config_name_or_settings() -> None:
    by_name = A.load_dataset("digits", seed=3)
    by_settings = A.load_dataset(DataSettings.from_config("digits"), seed=3)
    by_mapping = A.load_dataset({"name": "digits"}, seed=3)
    assert torch.equal(by_name.val_y, by_settings.val_y) and torch.equal(by_name.val_y, by_mapping.val_y)
    # The config file sets digits' augmentation; a bare mapping takes the settings' defaults.
    assert by_name.augment == Augment(crop_padding=1) and by_mapping.augment == Augment()
    synthetic = A.load_dataset("synthetic")
    assert len(synthetic.val_y) == round(512 * 0.2)  # synthetic.yaml's own val_fraction


def test_load_dataset_refuses_a_bad_mapping_or_name_before_reading_anything() -> None:
    with pytest.raises(ConfigError, match=r"^data has unknown key\(s\) bogus"):
        A.load_dataset({"name": "digits", "bogus": 1})
    with pytest.raises(ConfigError, match=r"^data 'nowhere' not found in .*; available: .*digits"):
        A.load_dataset("nowhere")


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist is not installed",
)
def test_load_dataset_finds_fashion_mnist_from_a_mapping_and_from_its_name() -> None:
    from_mapping = A.load_dataset({"name": "fashion_mnist", "subset": 100})
    from_name = A.load_dataset("fashion_mnist")
    assert from_mapping.shape == from_name.shape == (1, 28, 28) and len(from_mapping.train_y) == 100
    assert from_name.augment == Augment(crop_padding=2, flip=True)


# --------------------------------------------------------------------------- overrides


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_config_needs_no_override(name: str) -> None:
    changed = shipped(name).overrides()
    assert changed == {f"data.{k}": v for k, v in REQUIRED.get(name, {}).items()}


def test_overrides_are_the_keys_that_differ_in_the_layouts_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = shipped(
        "image_folder",
        dir="photos",
        cache_dir="~/cache",
        size=[32, 32],
        subset=200,
        val_fraction=0.25,
        augment={"flip": True},
    )
    assert list((settings.overrides() or {}).items()) == [
        ("data.dir", str((tmp_path / "photos").resolve())),  # made absolute: the command may run elsewhere
        ("data.size", [32, 32]),
        ("data.cache_dir", str(Path("~/cache").expanduser().resolve())),
        ("data.val_fraction", 0.25),
        ("data.subset", 200),
        ("data.augment.flip", True),
    ]
    # The same value written another way is no difference: ~ is the home folder.
    cifar = shipped("cifar10", dir=str(Path("~/datasets/cifar-10-batches-py").expanduser()))
    assert cifar.overrides() == {}


def test_settings_from_python_state_where_they_differ_from_the_config_file() -> None:
    # Digits' file sets crop_padding 1; a bare mapping has no augmentation.
    assert DataSettings.from_mapping({"name": "digits"}).overrides() == {"data.augment.crop_padding": 0}


def test_no_overrides_without_a_config_file_of_that_name() -> None:
    assert DataSettings(config="arrays_from_memory").overrides() is None


def test_a_key_the_config_file_lacks_is_added_with_a_plus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "archsearch_conf" / "data"
    folder.mkdir(parents=True)
    # A user's config without the shipped defaults list: val_fraction is not in it.
    (folder / "photos.yaml").write_text("name: image_folder\ndir: /data/photos\n")
    monkeypatch.setenv("ARCHSEARCH_CONFIG_DIR", str(tmp_path / "archsearch_conf"))
    settings = DataSettings.from_config("photos")
    assert settings.config == "photos" and settings.options_as(ImageFolderOptions).dir == "/data/photos"
    changed = dataclasses.replace(settings, val_fraction=0.2, subset=5).overrides()
    assert changed == {"+data.val_fraction": 0.2, "+data.subset": 5}


def test_config_files_compose_their_defaults_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "small_digits.yaml").write_text("defaults:\n  - digits\n  - _self_\nsubset: 300\n")
    (folder / "loop.yaml").write_text("defaults:\n  - loop\n")
    monkeypatch.setenv("ARCHSEARCH_CONFIG_DIR", str(tmp_path))
    small = DataSettings.from_config("small_digits")
    assert small == dataclasses.replace(DataSettings.from_config("digits"), subset=300, config="small_digits")
    assert small.overrides() == {}
    with pytest.raises(ConfigError, match="includes itself"):
        config_file("loop")


OVERRIDDEN = [
    ("synthetic", {"subset": 200, "train_size": 256, "test_size": 64}),
    ("digits", {"val_fraction": 0.3, "augment": {"crop_padding": 0, "erase_p": 0.5}}),
    ("fashion_mnist", {"dir": "/data/fm", "subset": 0.5, "augment": {"flip": False}}),
    ("image_folder", {"size": [16, 16], "channels": 1, "skip_bad": True, "workers": 2}),
    (
        "arrays",
        {"path": "/d/x.npy", "labels": "/d/y.npy", "test_path": "/d/tx.npy", "test_labels": "/d/ty.npy"},
    ),
    ("torchvision", {"name": "MNIST", "download": True, "channels": 3, "test_fraction": 0.1}),
]


@pytest.mark.parametrize(("name", "changes"), OVERRIDDEN)
def test_the_overrides_compose_back_into_the_same_settings(name: str, changes: dict[str, Any]) -> None:
    """``data=CONFIG`` plus the words the retrain commands write, composed by Hydra, is the same."""
    from hydra import compose, initialize_config_dir

    from archsearch.cli.config import plain
    from archsearch.results.commands import _override

    settings = shipped(name, **changes)
    words = [f"data={settings.config}", *(_override(k, v) for k, v in (settings.overrides() or {}).items())]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        composed = plain(compose("config", overrides=words).data)
    assert DataSettings.from_mapping(composed, config=name) == settings
