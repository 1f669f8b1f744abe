"""Configurations from files: the built-in presets and search spaces, YAML read with
errors that name the file and line, and the layering defaults, preset, flags."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sigma_pyro.config.flags import flag
from sigma_pyro.config.schema import Config, field_types
from sigma_pyro.errors import ConfigError

PRESET_NAMES = (
    "synthetic",
    "beauty",
    "toys",
    "office",
    "beauty-published",
    "toys-published",
    "office-published",
)


def preset_path(name: str) -> Path:
    """A built-in preset by name, or any YAML file by path."""
    if name in PRESET_NAMES:
        return Path(str(resources.files("sigma_pyro.presets") / f"{name}.yaml"))
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"--preset {name}: no such file")
        return path
    raise ConfigError(
        f"--preset {name!r} is unknown (choose from {', '.join(PRESET_NAMES)} or give a .yaml file)"
    )


def read_preset(path: Path, inside: tuple[Path, ...] = ()) -> Any:
    """A preset's sections, layered on those of the preset its ``base:`` names (a built-in
    preset, or a YAML file relative to this one): the tuned presets keep only what their
    studies changed, on top of the published settings."""
    values = read_yaml(path)
    if not isinstance(values, dict) or "base" not in values:
        return values
    base = values.pop("base")
    if base in PRESET_NAMES:
        base_path = preset_path(base)
    elif isinstance(base, str) and Path(base).suffix in (".yaml", ".yml"):
        base_path = path.parent / base
    else:
        raise ConfigError(f"{path}: base {base!r} is neither a preset nor a .yaml file")
    if not base_path.is_file():
        raise ConfigError(f"{path}: base {base}: no such file")
    if base_path.resolve() in (*inside, path.resolve()):
        raise ConfigError(f"{path}: base {base} leads back to itself")
    layered = read_preset(base_path, (*inside, path.resolve())) or {}
    for section, fields in values.items():
        if fields is None:  # an empty section changes nothing
            continue
        below = layered.get(section)
        both = isinstance(below, dict) and isinstance(fields, dict)
        layered[section] = {**below, **fields} if both else fields
    return layered


def space_names() -> tuple[str, ...]:
    """The search spaces of ``sigma-pyro tune`` that ship in ``sigma_pyro/presets/spaces``."""
    folder = resources.files("sigma_pyro.presets") / "spaces"
    return tuple(
        sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))
    )


def space_path(name: str) -> Path:
    """A shipped search space by name, or any YAML file by path."""
    if name in space_names():
        return Path(str(resources.files("sigma_pyro.presets") / "spaces" / f"{name}.yaml"))
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"--space {name}: no such file (shipped: {', '.join(space_names())})")
    return path


def read_yaml(path: Path) -> Any:
    """A YAML file's content; unreadable text is a ConfigError naming the file and line."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        line = err.object.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{err.object[err.start]:02x})"
        ) from None
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f"{path}:{line + 1}" if line is not None else str(path)
        problem = getattr(err, "problem", None) or getattr(err, "reason", None)
        detail = f" ({problem})" if problem else ""
        raise ConfigError(f"{where}: not valid YAML{detail}") from None


def load_config(preset: str | None = None, overrides: dict | None = None) -> Config:
    """Defaults, then the preset, then explicit overrides; validated."""
    config = Config()
    from_preset: set[str] = set()
    if preset is not None:
        path = preset_path(preset)
        values = read_preset(path)
        config.update(values or {}, str(path))
        from_preset = {
            name
            for fields in (values or {}).values()
            if isinstance(fields, dict)
            for name in fields
        }
    if overrides:
        config.update(overrides, "command line")
        from_preset -= {name for fields in overrides.values() for name in (fields or {})}
    try:
        return config.validate()
    except ConfigError as err:
        # validate() names flags; when the bad value came from a YAML file, name the file too.
        if any(flag(name) in str(err) for name in from_preset):
            raise ConfigError(f"{path}: {err}") from None
        raise


def nest_overrides(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"hidden_size": 64}`` -> ``{"model": {"hidden_size": 64}}``; unknown names raise."""
    types = field_types()
    nested: dict[str, dict[str, Any]] = {}
    for name, value in flat.items():
        if name not in types:
            raise ConfigError(f"unknown setting {name!r} ({flag(name)})")
        nested.setdefault(types[name][0], {})[name] = value
    return nested
