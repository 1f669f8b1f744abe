"""Typed configuration with YAML presets.

A configuration is four dataclasses (data, model, train, eval). Presets are commented YAML
files in ``sigma_pyro/presets``; command-line flags override them. Field names are unique
across sections so every field is also a flag: ``hidden_size`` is ``--hidden-size``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from sigma_pyro.errors import ConfigError


@dataclass
class DataConfig:
    path: str | None = None  # None trains on the embedded synthetic dataset
    format: str | None = None  # seq | inter | table; None infers from the extension
    user_column: str = "user_id"
    item_column: str = "item_id"
    time_column: str = "timestamp"
    rating_column: str | None = None
    min_rating: float | None = None
    kcore: int = 0
    synthetic_users: int = 2000
    synthetic_items: int = 1000
    synthetic_categories: int = 8
    synthetic_seed: int = 0


@dataclass
class ModelConfig:
    prior: str = "sigma"
    hidden_size: int = 128
    num_layers: int = 1
    decoder_layers: int = 1
    num_heads: int = 4
    hidden_dropout: float = 0.3
    attention_dropout: float = 0.0
    # Dropout on z where the decoder reads it. The decoder used to apply hidden_dropout
    # here; at the published Beauty settings that alone cut validation Recall@20 after
    # 2,100 steps by a quarter (docs/tuning.md), so it is off unless asked for.
    decoder_input_dropout: float = 0.0
    max_seq_length: int = 50
    num_interests: int = 4
    assignment_temperature: float = 0.1  # initial temperature of the cosine assignments
    learn_assignment_temperature: bool = True
    interest_temperature: float = 0.1
    interest_embedding: str = "separate"  # item vectors of the MIE part: separate|projected|shared
    interest_decay: float = 1.0  # weight decay^s of the item s positions back (1: mean)
    interest_positions: str = "all"  # interest head scores every real position, or "last"
    interest_subsample: int = 128  # positions per batch scoring their interests (0: all)
    orthogonality_weight: float = 0.01
    balance_weight: float = 0.01  # per token: std / mean of batch-averaged intensities
    sharpness_weight: float = 0.01  # per token: mean entropy of the item assignments
    train_prototypes: bool = True
    pseudo_inputs: int = 32  # VampPrior: number of learnable pseudo-sequences
    likelihood: str = "full"  # full softmax, or "sampled" for very large catalogs
    negatives: int = 1000  # popularity-sampled negatives per batch (sampled only)


@dataclass
class TrainConfig:
    epochs: int = 400
    batch_size: int = 256
    max_batch_tokens: int = 0  # cap on real positions per batch (0: no cap); bounds memory
    lr: float = 1e-3
    clip_norm: float = 10.0
    num_particles: int = 1
    analytic_kl: bool = False  # closed-form KL of z (TraceMeanField_ELBO); normal prior only
    kl_cap: float = 0.0016  # weight of z's summed KL per real token, after the ramp
    kl_anneal_steps: int = 10000
    interest_weight_start: float = 0.2
    interest_weight_end: float = 0.001
    interest_weight_decay: float = 0.001
    patience: int = 10
    early_stop_metric: str = "ndcg@10"
    seed: int = 0
    device: str = "cpu"
    mixed_precision: bool = False  # bfloat16 autocast of the networks; densities stay fp32
    progress: bool = True
    # Event files under OUT/tensorboard, when the optional tensorboard package is installed.
    tensorboard: bool = True


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [5, 10, 20, 40])
    mask_history: bool = True
    posterior_samples: int = 0  # 0: posterior mean of z; S > 0: average S predictives
    eval_batch_size: int = 1024
    item_chunk_size: int = 32768  # items scored at once: memory ~ users x this x 4 bytes


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> Config:
        config = cls()
        config.update(values, source)
        return config

    def update(self, values: dict, source: str = "config") -> None:
        """Apply nested ``{section: {field: value}}`` values, checking names and types."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: expected a mapping of sections {sorted(SECTIONS)}")
        for section, fields in values.items():
            if section not in SECTIONS:
                raise ConfigError(
                    f"{source}: unknown section {section!r} (expected one of {', '.join(SECTIONS)})"
                )
            if fields is None:
                continue
            if not isinstance(fields, dict):
                raise ConfigError(f"{source}: section {section!r} must be a mapping")
            target = getattr(self, section)
            hints = get_type_hints(type(target))
            for name, value in fields.items():
                if name not in hints:
                    raise ConfigError(f"{source}: unknown key {section}.{name}")
                setattr(
                    target,
                    name,
                    _coerce(value, hints[name], f"{source}: {section}.{name} ({flag(name)})"),
                )

    def validate(self) -> Config:
        """Reject impossible settings, naming the flag that sets them."""
        self._check_ranges()
        self._check_choices()
        return self

    def _check_ranges(self) -> None:
        m, t, e = self.model, self.train, self.eval
        positive = {
            "hidden_size": m.hidden_size,
            "num_layers": m.num_layers,
            "num_heads": m.num_heads,
            "num_interests": m.num_interests,
            "pseudo_inputs": m.pseudo_inputs,
            "epochs": t.epochs,
            "batch_size": t.batch_size,
            "num_particles": t.num_particles,
            "eval_batch_size": e.eval_batch_size,
            "item_chunk_size": e.item_chunk_size,
            "lr": t.lr,
            "assignment_temperature": m.assignment_temperature,
            "interest_temperature": m.interest_temperature,
            "synthetic_users": self.data.synthetic_users,
            "synthetic_items": self.data.synthetic_items,
            "synthetic_categories": self.data.synthetic_categories,
            # poutine.scale needs a positive scale; a zero weight would also stop
            # the guide's scales from learning.
            "kl_cap": t.kl_cap,
            "interest_weight_start": t.interest_weight_start,
            "interest_weight_end": t.interest_weight_end,
        }
        for name, value in positive.items():
            if not value > 0:  # also rejects NaN
                raise ConfigError(f"{flag(name)} must be positive, got {value}")
        non_negative = {
            "decoder_layers": m.decoder_layers,
            "interest_subsample": m.interest_subsample,
            "max_batch_tokens": t.max_batch_tokens,
            "kl_anneal_steps": t.kl_anneal_steps,
            "patience": t.patience,
            "orthogonality_weight": m.orthogonality_weight,
            "kcore": self.data.kcore,
            "balance_weight": m.balance_weight,
            "sharpness_weight": m.sharpness_weight,
            "interest_weight_decay": t.interest_weight_decay,
            "posterior_samples": e.posterior_samples,
            "clip_norm": t.clip_norm,
        }
        for name, value in non_negative.items():
            if not value >= 0:
                raise ConfigError(f"{flag(name)} must be >= 0, got {value}")
        for name in ("hidden_dropout", "attention_dropout", "decoder_input_dropout"):
            value = getattr(m, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{flag(name)} must be in [0, 1), got {value}")
        if m.max_seq_length < 2:
            raise ConfigError(
                f"{flag('max_seq_length')} must be at least 2, got {m.max_seq_length}"
            )
        if m.hidden_size % m.num_heads:
            raise ConfigError(
                f"{flag('hidden_size')} ({m.hidden_size}) must be divisible by "
                f"{flag('num_heads')} ({m.num_heads})"
            )
        if not e.ks or min(e.ks) <= 0:
            raise ConfigError(f"{flag('ks')} must be a non-empty list of positive cut-offs")

    def _check_choices(self) -> None:
        m, t = self.model, self.train
        if early_stop_cutoff(t.early_stop_metric) is None and t.early_stop_metric != "mrr":
            raise ConfigError(
                f"{flag('early_stop_metric')} {t.early_stop_metric!r} must be "
                "recall@K, ndcg@K or mrr"
            )
        if not 0.0 < m.interest_decay <= 1.0:
            raise ConfigError(f"--interest-decay must be in (0, 1], got {m.interest_decay}")
        if m.interest_embedding not in ("shared", "projected", "separate"):
            raise ConfigError(
                f"--interest-embedding must be shared, projected or separate, "
                f"got {m.interest_embedding!r}"
            )
        if m.interest_positions not in ("all", "last"):
            raise ConfigError(
                f"--interest-positions must be all or last, got {m.interest_positions!r}"
            )
        if m.likelihood not in ("full", "sampled"):
            raise ConfigError(f"--likelihood must be full or sampled, got {m.likelihood!r}")
        if m.likelihood == "sampled" and m.negatives < 1:
            raise ConfigError(
                f"--negatives must be at least 1 with --likelihood sampled, got {m.negatives}"
            )
        if self.data.format not in (None, "seq", "inter", "table"):
            raise ConfigError(f"--format must be seq, inter or table, got {self.data.format!r}")
        from sigma_pyro.models.priors import PRIORS  # late: priors import the nn package

        if m.prior not in PRIORS:
            raise ConfigError(
                f"--prior {m.prior!r} is unknown (choose from {', '.join(sorted(PRIORS))})"
            )
        check_device(t.device)
        if t.analytic_kl and m.prior != "normal":
            # Only N(0, I) has a closed-form KL from the Gaussian guide; a mixture prior
            # would silently fall back to the Monte Carlo estimate.
            raise ConfigError(f"{flag('analytic_kl')} needs --prior normal, got --prior {m.prior}")


def check_device(name: str) -> None:
    """A device torch can parse and this machine has, else a one-line ConfigError."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name}: CUDA is not available here (torch "
                f"{torch.__version__}, {torch.cuda.device_count()} GPUs visible)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available here")


def early_stop_cutoff(metric: str) -> int | None:
    """K of a ``recall@K`` / ``ndcg@K`` metric name, else None."""
    kind, _, k = metric.partition("@")
    if kind in ("recall", "ndcg") and k.isdigit() and int(k) > 0:
        return int(k)
    return None


# Flags, coercion and validation are hand-written rather than left to a library (pydantic,
# OmegaConf, an argparse-from-dataclass helper): every dataclass field becomes both a CLI flag
# and a YAML key, and every bad value must be a one-line error naming that flag (and the file
# it came from). No dependency gives that with these messages.
def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def field_types() -> dict[str, tuple[str, Any]]:
    """Every configurable field: name -> (section, type)."""
    out = {}
    for section, cls in SECTIONS.items():
        for name, hint in get_type_hints(cls).items():
            out[name] = (section, hint)
    return out


def _coerce(value, hint, where: str):
    """Convert YAML or command-line values to the field's declared type."""
    args = getattr(hint, "__args__", ())
    optional = type(None) in args
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{where}: may not be empty")
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    origin = getattr(base, "__origin__", None)
    try:
        if origin is list:
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split()]
            return [int(v) for v in value]
        if base is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1", "on"):
                    return True
                if value.lower() in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if base in (int, float) and isinstance(value, bool):
            raise ValueError(value)
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if base is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}: cannot read {value!r} as {getattr(base, '__name__', base)}"
        ) from None


PRESET_NAMES = ("synthetic", "beauty", "toys", "office")


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
        values = read_yaml(path)
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
