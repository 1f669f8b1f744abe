"""Typed configuration with YAML presets.

A configuration is four dataclasses (data, model, train, eval). Presets are commented YAML
files in ``sigma_pyro/presets``; command-line flags override them. Field names are unique
across sections so every field is also a flag: ``hidden_size`` is ``--hidden-size``.

``schema`` holds the dataclasses, ``flags`` the flag names and the coercion of values,
``checks`` the validation and ``files`` the presets, search spaces and loading.
"""

from sigma_pyro.config.checks import check_device, early_stop_cutoff
from sigma_pyro.config.files import (
    PRESET_NAMES,
    load_config,
    nest_overrides,
    preset_path,
    read_yaml,
    space_names,
    space_path,
)
from sigma_pyro.config.flags import flag
from sigma_pyro.config.schema import (
    SECTIONS,
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    TrainConfig,
    field_types,
)
from sigma_pyro.errors import ConfigError

__all__ = [
    "PRESET_NAMES",
    "SECTIONS",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "TrainConfig",
    "check_device",
    "early_stop_cutoff",
    "field_types",
    "flag",
    "load_config",
    "nest_overrides",
    "preset_path",
    "read_yaml",
    "space_names",
    "space_path",
]
