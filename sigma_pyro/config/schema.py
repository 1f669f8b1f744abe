"""The four sections of a configuration (data, model, train, eval) as dataclasses, and the
whole configuration that reads nested values into them. Field names are unique across
sections, so every field is also a flag: ``hidden_size`` is ``--hidden-size``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from sigma_pyro.config.checks import check_choices, check_ranges
from sigma_pyro.config.flags import coerce, flag
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
    # Where the transformers learn an item lies: "relative" (an attention bias on the distance
    # back from each attending position), "absolute" (an embedding of its index from the
    # window's start; the default until relative scored higher on validation NDCG@20 on
    # Office, 4 seeds, and Beauty, 3 seeds: docs/tuning.md) or "recency" (its index back
    # from the sequence's last item, what SASRec's left padding gives).
    position_encoding: str = "relative"
    # BSARec's token mixer (Shin et al., AAAI 2024), made causal: each block mixes
    # frequency_mix x a frequency filter with (1 - frequency_mix) x attention. The filter keeps
    # the frequency_bins lowest frequencies of an FFT over the max_seq_length window (BSARec's
    # c = 2 x bins - 1) and learns a rescaling of the rest. 0: attention only.
    frequency_mix: float = 0.0
    frequency_bins: int = 3
    # Free bits (Kingma et al., 2016): the KL of z costs nothing up to this many nats per
    # real token of the batch, so its gradient (on encoder and prior alike) vanishes there;
    # above it the KL costs its full annealed weight. 0: the plain (weighted) ELBO.
    kl_free_bits: float = 0.0
    num_interests: int = 4
    # Temperature of the cosine assignments, annealed geometrically from
    # assignment_temperature_start down to assignment_temperature over
    # assignment_anneal_epochs, then held (0 epochs: no annealing). On the synthetic data
    # (3 seeds) the prototypes then recover the planted categories at item NMI 0.95, against
    # 0.67 for a temperature learned from 0.1 (learn_assignment_temperature, with
    # assignment_anneal_epochs 0) and 0.72 for one fixed at 0.1 (docs/interests.md).
    assignment_temperature: float = 0.1
    assignment_temperature_start: float = 1.0
    assignment_anneal_epochs: int = 10
    learn_assignment_temperature: bool = False
    interest_temperature: float = 0.1  # initial temperature of the interest head's softmax
    # Learned, the head can make its softmax as peaked as the data allow: cosine / 0.1 puts
    # every logit within +-10, which kept its NLL near ln(num_items) on Office while it ranked.
    learn_interest_temperature: bool = False
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
    max_batch_tokens: int = 0  # cap on scored positions per batch (0: no cap); bounds memory
    # "sequences": a sample is a whole sequence, scored at every position; "prefixes": each
    # prefix is a sample of its own, scored at its last position (docs/tuning.md).
    training_samples: str = "sequences"
    lr: float = 1e-3
    clip_norm: float = 10.0
    weight_decay: float = 0.0  # L2 weight decay of the Adam step (ClippedAdam's weight_decay)
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
                    coerce(value, hints[name], f"{source}: {section}.{name} ({flag(name)})"),
                )

    def validate(self) -> Config:
        """Reject impossible settings, naming the flag that sets them."""
        check_ranges(self)
        check_choices(self)
        return self


def field_types() -> dict[str, tuple[str, Any]]:
    """Every configurable field: name -> (section, type)."""
    out = {}
    for section, cls in SECTIONS.items():
        for name, hint in get_type_hints(cls).items():
            out[name] = (section, hint)
    return out
