"""Validation of a whole configuration: every impossible setting is a one-line ConfigError
naming the flag that sets it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sigma_pyro.config.flags import flag
from sigma_pyro.errors import ConfigError

# The values of --position-encoding (sigma_pyro/nn/transformer.py says what each means).
POSITION_ENCODINGS = ("absolute", "recency", "relative")
# Whole sequences scored at every position, or each prefix scored at its last.
TRAINING_SAMPLES = ("sequences", "prefixes")

if TYPE_CHECKING:
    from sigma_pyro.config.schema import Config


def check_ranges(config: Config) -> None:
    m, t, e = config.model, config.train, config.eval
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
        "assignment_temperature_start": m.assignment_temperature_start,
        "synthetic_users": config.data.synthetic_users,
        "synthetic_items": config.data.synthetic_items,
        "synthetic_categories": config.data.synthetic_categories,
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
        "assignment_anneal_epochs": m.assignment_anneal_epochs,
        "interest_subsample": m.interest_subsample,
        "max_batch_tokens": t.max_batch_tokens,
        "kl_anneal_steps": t.kl_anneal_steps,
        "patience": t.patience,
        "orthogonality_weight": m.orthogonality_weight,
        "kcore": config.data.kcore,
        "balance_weight": m.balance_weight,
        "sharpness_weight": m.sharpness_weight,
        "interest_weight_decay": t.interest_weight_decay,
        "posterior_samples": e.posterior_samples,
        "clip_norm": t.clip_norm,
        "weight_decay": t.weight_decay,
        "kl_free_bits": m.kl_free_bits,
    }
    for name, value in non_negative.items():
        if not value >= 0:
            raise ConfigError(f"{flag(name)} must be >= 0, got {value}")
    for name in ("hidden_dropout", "attention_dropout", "decoder_input_dropout"):
        value = getattr(m, name)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{flag(name)} must be in [0, 1), got {value}")
    if m.max_seq_length < 2:
        raise ConfigError(f"{flag('max_seq_length')} must be at least 2, got {m.max_seq_length}")
    if not 0.0 <= m.frequency_mix <= 1.0:
        raise ConfigError(f"{flag('frequency_mix')} must be in [0, 1], got {m.frequency_mix}")
    if not 1 <= m.frequency_bins <= m.max_seq_length // 2 + 1:
        raise ConfigError(
            f"{flag('frequency_bins')} must be in [1, {m.max_seq_length // 2 + 1}] "
            f"({flag('max_seq_length')} // 2 + 1), got {m.frequency_bins}"
        )
    if m.hidden_size % m.num_heads:
        raise ConfigError(
            f"{flag('hidden_size')} ({m.hidden_size}) must be divisible by "
            f"{flag('num_heads')} ({m.num_heads})"
        )
    if not e.ks or min(e.ks) <= 0:
        raise ConfigError(f"{flag('ks')} must be a non-empty list of positive cut-offs")


def check_choices(config: Config) -> None:
    m, t = config.model, config.train
    if early_stop_cutoff(t.early_stop_metric) is None and t.early_stop_metric != "mrr":
        raise ConfigError(
            f"{flag('early_stop_metric')} {t.early_stop_metric!r} must be recall@K, ndcg@K or mrr"
        )
    if not 0.0 < m.interest_decay <= 1.0:
        raise ConfigError(f"--interest-decay must be in (0, 1], got {m.interest_decay}")
    if m.interest_embedding not in ("shared", "projected", "separate"):
        raise ConfigError(
            f"--interest-embedding must be shared, projected or separate, "
            f"got {m.interest_embedding!r}"
        )
    if m.position_encoding not in POSITION_ENCODINGS:
        raise ConfigError(
            "--position-encoding must be absolute, recency or relative, "
            f"got {m.position_encoding!r}"
        )
    if m.interest_positions not in ("all", "last"):
        raise ConfigError(f"--interest-positions must be all or last, got {m.interest_positions!r}")
    if m.assignment_anneal_epochs and m.learn_assignment_temperature:
        # The schedule would overwrite what the optimiser learns at every epoch.
        raise ConfigError(
            "--learn-assignment-temperature needs --assignment-anneal-epochs 0: the "
            f"annealing schedule ({flag('assignment_anneal_epochs')} "
            f"{m.assignment_anneal_epochs}) would overwrite the learned temperature"
        )
    if t.training_samples not in TRAINING_SAMPLES:
        raise ConfigError(
            f"{flag('training_samples')} must be sequences or prefixes, got {t.training_samples!r}"
        )
    if m.likelihood not in ("full", "sampled"):
        raise ConfigError(f"--likelihood must be full or sampled, got {m.likelihood!r}")
    if m.likelihood == "sampled" and m.negatives < 1:
        raise ConfigError(
            f"--negatives must be at least 1 with --likelihood sampled, got {m.negatives}"
        )
    if config.data.format not in (None, "seq", "inter", "table"):
        raise ConfigError(f"--format must be seq, inter or table, got {config.data.format!r}")
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
    if t.analytic_kl and m.kl_free_bits > 0:
        # The allowance is computed from the Monte Carlo KL that Trace_ELBO uses; against
        # the closed form its gradient would not cancel the KL's below the allowance.
        raise ConfigError(
            f"{flag('kl_free_bits')} needs the Monte Carlo KL: drop {flag('analytic_kl')}"
        )


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
