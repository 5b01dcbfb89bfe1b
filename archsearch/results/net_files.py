"""The texts of a trial's files: its net YAML (exported and in MLflow) and its MLflow ``config.yaml``.

One home for both copies, so the ``nets/*.yaml`` the export writes and the ``net.yaml`` artifact
of the trial's (and the finalize's) MLflow run are the same text: a header naming the study,
the trial and the command that retrains it, then the network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from archsearch.results.commands import fill_config

__all__ = ["TrialTexts", "net_file_name", "net_text", "parse_config", "trial_config_text"]

_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def net_file_name(number: int, spec_hash: str) -> str:
    """``trial_0007_<hash>.yaml``: a member's file name under the export's ``nets/``."""
    return f"trial_{number:04d}_{spec_hash}.yaml"


def _plain(spec: Mapping[str, Any]) -> Any:
    # As the study stores it (JSON): a Fire module's expand keys are strings, tuples are lists,
    # so a spec fresh from the sampler and one read back from the study dump alike.
    return json.loads(json.dumps(dict(spec), default=str))


def net_text(
    study_name: str, number: int, spec: Mapping[str, Any], retrain: str, net_file: Path | None
) -> str:
    """A trial's net YAML: the header (study, trial, retrain command) and the network.

    Args:
        spec: the network (``NetSpec.to_dict()`` or the study's ``spec`` user attr).
        retrain: the study's retrain command with its ``model_file={config}`` placeholder
            ("" when there is none: no ``retrain:`` line).
        net_file: the exported file the retrain command names (None: no ``retrain:`` line).
    """
    header = f"# archsearch study {study_name!r}, trial {number}\n"
    if retrain and net_file is not None:
        header += f"# retrain: {fill_config(retrain, net_file)}\n"
    return header + yaml.dump(_plain(spec), Dumper=_DUMPER, sort_keys=False, default_flow_style=None)


def parse_config(text: str) -> Mapping[str, Any] | None:
    """A study's logged config as a mapping (None when it is not a YAML mapping)."""
    try:
        parsed = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError:
        return None
    return parsed if isinstance(parsed, Mapping) else None


def trial_config_text(
    config: Mapping[str, Any] | None,
    fallback: str,
    *,
    study_name: str,
    number: int,
    spec: Mapping[str, Any] | None,
    spec_hash: str = "",
) -> str:
    """One trial's ``config.yaml``: the study's config with ``model`` set to the trial's network.

    ``model_file`` (which would override ``model``) is emptied; every other key is the study's.
    A trial whose network could not be sampled, or a config that is not a mapping
    (``fallback`` is its text), keeps the study's config under a header saying so.
    """
    if config is None or spec is None:
        what = "no network was sampled" if spec is None else "the study's config is not a mapping"
        return f"# archsearch study {study_name!r}, trial {number}: the study's config ({what})\n" + fallback
    body = dict(config)
    body["model"] = _plain(spec)
    if "model_file" in body:
        body["model_file"] = None
    header = (
        f"# archsearch study {study_name!r}, trial {number}: the study's config, its model this "
        f"trial's network{f' (spec hash {spec_hash})' if spec_hash else ''}\n"
    )
    return header + yaml.dump(body, Dumper=_DUMPER, sort_keys=False, default_flow_style=None)


class TrialTexts:
    """The text files every trial's (and finalized member's) MLflow run logs: ``config.yaml`` and
    ``net.yaml``, the latter the same text as the export's ``nets/`` file of that trial.

    Args:
        study_name: the study.
        config_text: the study's config as logged on the parent run (YAML).
        retrain_command: the study's retrain command (``model_file={config}``; "" for none).
        export_dir: the export directory, whose ``nets/`` the retrain command names.
    """

    def __init__(self, study_name: str, config_text: str, retrain_command: str, export_dir: Path) -> None:
        self.study_name = study_name
        self.config_text = config_text
        self.retrain_command = retrain_command
        self.nets_dir = Path(export_dir).resolve() / "nets"
        self.config = parse_config(config_text) if config_text else None

    def __call__(self, number: int, spec: Mapping[str, Any] | None, spec_hash: str = "") -> dict[str, str]:
        """Artifact name -> text for trial ``number`` (no ``net.yaml`` without a network)."""
        texts = {
            "config.yaml": trial_config_text(
                self.config,
                self.config_text,
                study_name=self.study_name,
                number=number,
                spec=spec,
                spec_hash=spec_hash,
            )
        }
        if spec is not None:
            net_file = self.nets_dir / net_file_name(number, spec_hash)
            texts["net.yaml"] = net_text(self.study_name, number, spec, self.retrain_command, net_file)
        return texts
