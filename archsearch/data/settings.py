"""Typed, frozen data settings: the one place the ``data`` config is checked and defaulted.

The command line turns the ``data`` block of its config (conf/data/*.yaml) into a
:class:`DataSettings` with :meth:`DataSettings.from_mapping`, once, before anything is loaded or
written; everything below (the loaders, searches, the retrain commands) takes the settings and
never sees a config mapping. A bad key is one :class:`~archsearch.errors.ConfigError` sentence
naming it and what is allowed.

The keys every dataset has (``val_fraction``, ``subset``, ``augment``) are fields of
:class:`DataSettings`, whose defaults are the project's: the config files state them only
where they differ (they pull the defaults in as Hydra's ``data/base``). The keys of one loader
(a folder, a file, a shape) are that loader's own small options class, found in
:data:`~archsearch.data.loaders.LOADERS`: the table from a dataset's kind to the function that
loads it and its options.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from archsearch.checks import (
    check_choice,
    check_flag,
    check_int,
    check_number,
    is_int,
    is_number,
    known_fields,
    known_keys,
    plain_fields,
)
from archsearch.data.loaders import (
    DATASETS,
    LOADERS,
    ArraysOptions,
    Cifar10Options,
    DigitsOptions,
    FashionMnistOptions,
    ImageFolderOptions,
    Loader,
    LoaderOptions,
    SyntheticOptions,
    TorchvisionOptions,
    check_fraction,
)
from archsearch.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator

# The loader table's names are re-exported: ``from archsearch.data.settings import ...`` finds
# everything a data config is made of.
__all__ = [
    "DATASETS",
    "LOADERS",
    "ArraysOptions",
    "Augment",
    "Cifar10Options",
    "DataSettings",
    "DigitsOptions",
    "FashionMnistOptions",
    "ImageFolderOptions",
    "Loader",
    "LoaderOptions",
    "SyntheticOptions",
    "TorchvisionOptions",
    "base_mapping",
    "check_fraction",
    "check_subset",
    "config_file",
]

_OptionsT = TypeVar("_OptionsT")


# --------------------------------------------------------------------------- shared checks


def check_subset(value: Any) -> int | float | None:
    """``data.subset``: None (every training image), a fraction in (0, 1] or an image count >= 1.

    Whether a count fits the training images is known only once they are; the split checks it.
    """
    if value is None:
        return None
    if not is_number(value) or (is_int(value) and value < 1):
        raise ConfigError(f"data.subset must be a fraction in (0, 1] or an image count, got {value!r}.")
    if isinstance(value, float) and not 0.0 < value <= 1.0:
        raise ConfigError(f"data.subset={value} as a fraction must lie in (0, 1].")
    return value


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


# --------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augment:
    """Batch augmentation a dataset allows (applied by the trainer to training batches only).

    Args:
        crop_padding: pad by this many pixels and crop back at a random offset (0 = off).
        flip: mirror left-right with probability 1/2 (off for digits and text).
        erase_p: probability of erasing a random rectangle of each image (0 = off).
    """

    crop_padding: int = 0
    flip: bool = False
    erase_p: float = 0.0

    def __post_init__(self) -> None:
        check_int("data.augment.crop_padding", self.crop_padding, 0)
        check_flag("data.augment.flip", self.flip)
        check_number("data.augment.erase_p", self.erase_p, "in [0, 1]", lambda v: 0 <= v <= 1)

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip or self.erase_p > 0

    @classmethod
    def from_mapping(cls, raw: Any) -> Augment:
        """A ``data.augment`` block (None: no augmentation)."""
        return cls(**known_fields(raw, "data.augment", cls))


#: The keys of every dataset, in the order the config files write them (after ``name``).
_COMMON = ("val_fraction", "subset", "augment")


# --------------------------------------------------------------------------- the settings


@dataclass(frozen=True)
class DataSettings:
    """Which dataset, how it is split, and how it may be augmented.

    ``options`` holds the keys of the dataset's own loader (:data:`LOADERS`); None stands for
    that loader's defaults. ``config`` is the ``data=`` config these settings stand for: the
    retrain commands start from it and state every key that differs (:meth:`overrides`).
    """

    name: str = "digits"  # a kind of LOADERS, or with source: torchvision the torchvision class
    source: str | None = None  # the kind, where name is not one (torchvision)
    val_fraction: float = 0.1  # training images held out, with the run's seed; the search scores on these
    subset: int | float | None = None  # training images kept after that: None = all, a fraction, a count
    augment: Augment = field(default_factory=Augment)  # applied when trainer.augment is true
    options: Any = None  # the loader's options (LOADERS[kind].options); None = its defaults
    config: str = ""  # the data= config file; "" = the kind's own (data=digits, data=torchvision, ...)

    def __post_init__(self) -> None:
        """Built from Python (``DataSettings(val_fraction=2)``), a bad value is refused as from a config."""
        if self.source is not None:
            check_choice("data.source", self.source, DATASETS)
        else:
            check_choice("data.name", self.name, DATASETS)
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"data.name must name the dataset, got {self.name!r}.")
        loader = LOADERS[self.kind]
        options = loader.options() if self.options is None else self.options
        if not isinstance(options, loader.options):
            raise ConfigError(
                f"data.options of a {self.kind} dataset must be a {loader.options.__name__}, got {options!r}."
            )
        _set(self, "options", options)
        check_fraction("data.val_fraction", self.val_fraction)
        check_subset(self.subset)
        if not isinstance(self.augment, Augment):
            raise ConfigError(f"data.augment must be an Augment, got {self.augment!r}.")
        if not isinstance(self.config, str):
            raise ConfigError(f"the data config must be a name, got {self.config!r}.")
        _set(self, "config", self.config or self.kind)
        options.require(self.name)

    @property
    def kind(self) -> str:
        """The loader: ``source``, else ``name``."""
        return self.source or self.name

    def options_as(self, cls: type[_OptionsT]) -> _OptionsT:
        """The loader's options, typed as ``cls`` (what a loader reads its own keys through)."""
        if not isinstance(self.options, cls):
            raise TypeError(f"{self.kind} data has {type(self.options).__name__}, not {cls.__name__}")
        return self.options

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None, *, config: str = "") -> DataSettings:
        """Validate every key of a ``data`` block; missing keys take the defaults.

        Args:
            raw: the block, laid out as conf/data/*.yaml (None: the defaults, digits).
            config: the ``data=`` config it was composed from ("": the kind's own).

        Raises:
            ConfigError: one sentence naming the first bad or unknown key and what is allowed.
        """
        if not isinstance(raw, Mapping):
            known_keys(raw, "data", ("name", "source", *_COMMON))  # refuses what is not a mapping
            raw = {}
        name = raw.get("name", cls.name)
        source = raw.get("source")
        if source is not None:
            check_choice("data.source", source, DATASETS)
        else:
            check_choice("data.name", name, DATASETS)
        option_cls = LOADERS[source if source is not None else name].options
        option_keys = [f.name for f in dataclasses.fields(option_cls)]
        block = known_keys(raw, "data", ("name", "source", *_COMMON, *option_keys))
        return cls(
            name=name,
            source=source,
            val_fraction=block.get("val_fraction", cls.val_fraction),
            subset=block.get("subset"),
            augment=Augment.from_mapping(block.get("augment")),
            options=option_cls(**{k: v for k, v in block.items() if k in option_keys}),
            config=config,
        )

    @classmethod
    def from_config(cls, name: str) -> DataSettings:
        """The ``data=NAME`` config as the command line composes it (:func:`config_file`).

        Raises:
            ConfigError: no config folder holds the name, or the file has a bad key.
        """
        return cls.from_mapping(config_file(name), config=name)

    def to_mapping(self) -> dict[str, Any]:
        """The layout of conf/data/*.yaml with every key stated; ``from_mapping`` reads it back equal."""
        return {
            **({"source": self.source} if self.source is not None else {}),
            "name": self.name,
            **plain_fields(self.options),
            "val_fraction": self.val_fraction,
            "subset": self.subset,
            "augment": dataclasses.asdict(self.augment),
        }

    def overrides(self) -> dict[str, Any] | None:
        """The config overrides that rebuild these settings on top of ``data=CONFIG``.

        Every key (dotted below ``data.``) whose value differs from the config file's, in
        :meth:`to_mapping`'s order, as ``{"data.KEY": value}``; ``+data.KEY`` where the file
        lacks the key, as Hydra wants a new key written. Files and folders are made absolute,
        since a command may be run from another directory. None when no config of that name
        can be read: then no command line can name these settings.
        """
        try:
            file = config_file(self.config)
        except ConfigError:
            return None
        kind_defaults = {
            **({"source": self.source} if self.source is not None else {}),
            "name": self.name,
            **plain_fields(LOADERS[self.kind].options()),
            **base_mapping(),
        }
        given = _resolved(dict(_flat(self.to_mapping())), self.options.PATHS)
        stated = dict(_flat(file))
        base = _resolved({**dict(_flat(kind_defaults)), **stated}, self.options.PATHS)
        missing = object()
        return {
            f"{'' if key in stated else '+'}data.{key}": value
            for key, value in given.items()
            if base.get(key, missing) != value
        }


def base_mapping() -> dict[str, Any]:
    """The keys every dataset has, at their defaults: Hydra's ``data/base``, which the shipped
    data configs pull in, so ``data.val_fraction=0.2`` works without a ``+``."""
    defaults = DataSettings()
    return {
        key: (dataclasses.asdict(defaults.augment) if key == "augment" else getattr(defaults, key))
        for key in _COMMON
    }


def config_file(name: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``data=NAME`` config file composed as Hydra does: its defaults list (``base`` is
    :func:`base_mapping`, another name that data config) merged in order, then its own keys.

    Raises:
        ConfigError: no config folder holds the name, the file is not a mapping, or its defaults
            list goes round in a circle.
    """
    import yaml

    from archsearch.resources import find_config

    if name in _seen:
        raise ConfigError(f"data config {name!r} includes itself through its defaults list.")
    path = find_config("data", name)
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"data config {path} must be a mapping of data keys.")
    own = {k: v for k, v in loaded.items() if k != "defaults"}
    entries = loaded.get("defaults") or []
    if "_self_" not in entries:
        entries = [*entries, "_self_"]
    composed: dict[str, Any] = {}
    for entry in entries:
        if entry == "_self_":
            part = own
        elif entry == "base":
            part = base_mapping()
        elif isinstance(entry, str):
            part = config_file(entry, (*_seen, name))
        else:
            continue  # an override or another group's entry: not data keys
        composed = _merged(composed, part)
    return composed


def _merged(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, mappings merged key by key as OmegaConf does."""
    out = dict(base)
    for key, value in top.items():
        below = out.get(key)
        out[key] = (
            _merged(below, value) if isinstance(below, Mapping) and isinstance(value, Mapping) else value
        )
    return out


def _flat(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", list(value) if isinstance(value, tuple) else value


def _resolved(flat: dict[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    """``flat`` with the values of ``paths`` made absolute (``~`` expanded)."""
    return {
        key: str(Path(value).expanduser().resolve())
        if key in paths and isinstance(value, str) and value
        else value
        for key, value in flat.items()
    }
