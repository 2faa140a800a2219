"""Tuned settings per environment, kept as data: the YAML files beside this module (their
format: docs/architecture.md, Presets). ``TRPOConfig.from_preset`` validates a preset when it
is used; the tests validate every one."""

from __future__ import annotations

import copy
import difflib
import fnmatch
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

__all__ = [
    "PRESET_SOURCES",
    "Preset",
    "PresetFileError",
    "all_presets",
    "find_preset",
    "similar_presets",
]

_PRESET_KEYS = {"config", "note"}
PRESET_SOURCES = ("default", "zoo")
_ZOO_SOURCE = "RL Baselines3 Zoo"


class PresetFileError(ValueError):
    """A preset file of the package is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Preset:
    """One entry of a preset file: the env id or glob pattern (``ALE/*-v5``), its TRPOConfig
    fields (unvalidated), the file's ``source``, the file's name and the entry's ``note``."""

    env_id: str
    config: dict[str, Any] = field(repr=False)
    source: str
    file: str
    note: str | None = None

    @property
    def is_zoo(self) -> bool:
        """Whether the settings are RL Zoo's (``source="zoo"``), not tuned here."""
        return self.source.startswith(_ZOO_SOURCE)

    @property
    def is_pattern(self) -> bool:
        return any(char in self.env_id for char in "*?[")

    def matches(self, env_id: str) -> bool:
        return env_id == self.env_id or fnmatch.fnmatchcase(env_id, self.env_id)


@functools.cache
def all_presets() -> tuple[Preset, ...]:
    """Every preset of every ``*.yaml`` file in this package, files in name order."""
    presets: list[Preset] = []
    directory = resources.files(__name__)
    for entry in sorted(directory.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".yaml"):
            presets += _read_preset_file(entry.name, entry.read_text(encoding="utf-8"))
    seen: dict[tuple[str, bool], str] = {}  # an env id once among RL Zoo's, once among ours
    for preset in presets:
        key = (preset.env_id, preset.is_zoo)
        if key in seen:
            raise PresetFileError(
                f"preset {preset.env_id!r} is defined in both {seen[key]} and {preset.file}"
            )
        seen[key] = preset.file
    return tuple(presets)


def find_preset(env_id: str, source: str = "default") -> Preset | None:
    """The preset for ``env_id``: its exact entry, else the first matching pattern, else None.
    ``source``: ``"default"`` (the presets ``trpo train`` applies: a tuned one, rl/presets/
    tuned.yaml, before RL Zoo's) or ``"zoo"`` (RL Zoo's only)."""
    if source not in PRESET_SOURCES:
        raise ValueError(
            f"Invalid preset source: {source!r} (allowed: {', '.join(PRESET_SOURCES)})"
        )
    presets = [
        preset
        for preset in all_presets()
        if (source == "default" or preset.is_zoo) and preset.matches(env_id)
    ]
    # exact ids before patterns, ours before RL Zoo's; else in file order
    return min(presets, key=lambda preset: (preset.env_id != env_id, preset.is_zoo), default=None)


def similar_presets(env_id: str, count: int = 3) -> list[str]:
    """Env ids of the presets closest to ``env_id`` (another version first: HalfCheetah-v4 ->
    HalfCheetah-v5), for "did you mean" messages."""
    names = list(dict.fromkeys(preset.env_id for preset in all_presets()))
    base = env_id.rsplit("-v", 1)[0]
    versions = [name for name in names if name.rsplit("-v", 1)[0] == base]
    close = difflib.get_close_matches(env_id, names, n=count, cutoff=0.6)
    return list(dict.fromkeys(versions + close))[:count]


def _read_preset_file(name: str, text: str) -> list[Preset]:
    data = yaml.safe_load(text)
    if not isinstance(data, Mapping) or set(data) != {"source", "presets"}:
        raise PresetFileError(f"preset file {name}: must hold exactly 'source' and 'presets'")
    source, entries = data["source"], data["presets"]
    if not isinstance(source, str) or not source.strip():
        raise PresetFileError(f"preset file {name}: 'source' must be a non-empty string")
    if not isinstance(entries, Mapping):
        raise PresetFileError(f"preset file {name}: 'presets' must map env ids to presets")
    return [_read_entry(name, source.strip(), env_id, entry) for env_id, entry in entries.items()]


def _read_entry(name: str, source: str, env_id: Any, entry: Any) -> Preset:
    where = f"preset file {name}, entry {env_id!r}"
    if not isinstance(env_id, str) or not env_id:
        raise PresetFileError(f"{where}: the key must be an env id")
    if not isinstance(entry, Mapping) or not isinstance(entry.get("config"), Mapping):
        raise PresetFileError(f"{where}: must hold a 'config' mapping of TRPOConfig fields")
    unknown = set(entry) - _PRESET_KEYS
    if unknown:
        raise PresetFileError(
            f"{where}: unknown key(s) {sorted(unknown)} (allowed: {sorted(_PRESET_KEYS)})"
        )
    note = entry.get("note")
    if note is not None and not isinstance(note, str):
        raise PresetFileError(f"{where}: 'note' must be a string")
    config = copy.deepcopy(dict(entry["config"]))  # YAML anchors may share nested values
    if "env_id" in config:
        raise PresetFileError(f"{where}: 'config' must not set env_id (the key names the env)")
    return Preset(env_id, config, source, name, " ".join(note.split()) if note else None)
