"""The search space of ``sigma-pyro tune``: a YAML mapping of settings to Optuna
distributions, each bound and choice checked against the configuration before any trial
trains."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from sigma_pyro.config import field_types, flag, load_config, nest_overrides, read_yaml, space_path
from sigma_pyro.errors import ConfigError

# Settings that change what is measured or how, not the model: tuning them is a mistake.
NOT_TUNABLE = {
    "path",
    "format",
    "user_column",
    "item_column",
    "time_column",
    "rating_column",
    "min_rating",
    "kcore",
    "synthetic_users",
    "synthetic_items",
    "synthetic_categories",
    "synthetic_seed",
    "seed",
    "device",
    "progress",
    "tensorboard",
    "ks",
    "mask_history",
    "early_stop_metric",
    "eval_batch_size",
    "item_chunk_size",
}
SPEC_KEYS = {
    "float": ("low", "high", "log"),
    "int": ("low", "high", "step", "log"),
    "categorical": ("choices",),
}


def load_space(
    sources: str | Path | Sequence[str | Path],
    preset: str | None = None,
    overrides: dict | None = None,
) -> dict[str, BaseDistribution]:
    """Setting -> Optuna distribution, from a YAML mapping of settings to specs::

        lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
        num_layers: {type: int, low: 1, high: 3}          # also step
        hidden_size: {type: categorical, choices: [64, 128, 256]}

    Several sources make one space (``kl`` and ``sigma`` together give the sigma prior its
    own knobs in one study, with the same trial budget as a variant that has only the KL's),
    and a setting in two of them is an error rather than one silently winning. Each bound
    and choice is checked by building the preset's configuration with it (and the fixed
    ``overrides``), so that a value the configuration rejects fails before any trial trains."""
    overrides = dict(overrides or {})
    space: dict[str, BaseDistribution] = {}
    origin: dict[str, Path] = {}
    for source in [sources] if isinstance(sources, (str, Path)) else sources:
        path = space_path(str(source))
        specs = read_yaml(path)
        if not isinstance(specs, dict) or not specs:
            raise ConfigError(
                f"{path}: expected a mapping of settings to search specs, "
                "e.g. lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}"
            )
        for name, spec in specs.items():
            where = f"{path}: {name}"
            if name in origin:
                raise ConfigError(f"{where}: also searched by {origin[name]}; give it once")
            kind = _tunable_type(where, name, overrides)
            distribution = _distribution(where, spec, kind)
            space[name] = _checked(where, name, distribution, preset, overrides)
            origin[name] = path
    if not space:
        raise ConfigError("--space: give at least one search space")
    return space


def _tunable_type(where: str, name, overrides: dict) -> type:
    """The declared type of a setting that may be tuned."""
    types = field_types()
    if name not in types:
        raise ConfigError(f"{where}: unknown setting")
    if name in NOT_TUNABLE:
        raise ConfigError(f"{where}: not a model or training setting to tune")
    if name in overrides:
        raise ConfigError(f"{where}: also fixed by {flag(name)}; give one or the other")
    hint = types[name][1]
    if getattr(hint, "__origin__", None) is list:
        raise ConfigError(f"{where}: list-valued settings cannot be tuned")
    return hint


def _distribution(where: str, spec, hint: type) -> BaseDistribution:
    if not isinstance(spec, dict) or spec.get("type") not in SPEC_KEYS:
        raise ConfigError(f"{where}: expected {{type: float|int|categorical, ...}}, got {spec!r}")
    kind = spec["type"]
    unknown = [str(key) for key in spec if key != "type" and key not in SPEC_KEYS[kind]]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} for type {kind} "
            f"(expected {', '.join(SPEC_KEYS[kind])})"
        )
    if kind == "categorical":
        return _categorical(where, spec)
    if hint is not (float if kind == "float" else int):
        fits = "float" if hint is float else "int" if hint is int else "categorical"
        raise ConfigError(
            f"{where}: a {kind} range for a setting of type "
            f"{getattr(hint, '__name__', hint)}; use type: {fits}"
        )
    low, high = (_bound(where, key, spec, kind) for key in ("low", "high"))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    if kind == "float":
        return FloatDistribution(low, high, log=log)
    return IntDistribution(low, high, log=log, step=_step(where, spec, low, high, log))


def _bound(where: str, key: str, spec: dict, kind: str) -> float:
    if key not in spec:
        raise ConfigError(f"{where}: a {kind} range needs low and high")
    value = spec[key]
    if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        # YAML 1.1 reads 1e-4 (no dot) as text.
        hint = "; write 1e-4 as 1.0e-4" if isinstance(value, str) else ""
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}{hint}")
    return float(value) if kind == "float" else value


def _step(where: str, spec: dict, low: int, high: int, log: bool) -> int:
    step = spec.get("step", 1)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ConfigError(f"{where}: step must be a positive integer, got {step!r}")
    if log and step != 1:
        raise ConfigError(f"{where}: a log range cannot have a step")
    if (high - low) % step:
        raise ConfigError(f"{where}: high - low ({high - low}) must be a multiple of step ({step})")
    return step


def _categorical(where: str, spec: dict) -> CategoricalDistribution:
    choices = spec.get("choices")
    if not isinstance(choices, list) or len(choices) < 2:
        raise ConfigError(
            f"{where}: choices must be a list of at least two values, got {choices!r}"
        )
    if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
        raise ConfigError(f"{where}: each choice must be a single value, got {choices!r}")
    return CategoricalDistribution(choices)


def _checked(
    where: str, name: str, distribution: BaseDistribution, preset: str | None, overrides: dict
) -> BaseDistribution:
    """The distribution whose bounds or choices the configuration accepts; choices become
    the setting's type (a YAML 1 of a float setting is 1.0)."""
    categorical = isinstance(distribution, CategoricalDistribution)
    candidates = distribution.choices if categorical else (distribution.low, distribution.high)
    section = field_types()[name][0]
    values = []
    for value in candidates:
        try:
            config = load_config(preset, nest_overrides({**overrides, name: value}))
        except ConfigError as err:
            raise ConfigError(f"{where}: {value!r} is rejected: {err}") from None
        values.append(getattr(getattr(config, section), name))
    if not categorical:
        return distribution
    if len(set(values)) != len(values):
        raise ConfigError(f"{where}: a choice is given twice")
    return CategoricalDistribution(values)


def describe(distribution: BaseDistribution) -> str:
    """A distribution in words, for the report."""
    if isinstance(distribution, CategoricalDistribution):
        return "one of " + ", ".join(map(str, distribution.choices))
    kind = "integers" if isinstance(distribution, IntDistribution) else "reals"
    text = f"{kind} {distribution.low:g} to {distribution.high:g}"
    if isinstance(distribution, IntDistribution) and distribution.step != 1:
        text += f" in steps of {distribution.step}"
    return text + (", log-uniform" if distribution.log else "")
