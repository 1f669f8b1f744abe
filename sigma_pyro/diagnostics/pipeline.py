"""``diagnose``: draw, score, summarise, plot and report, for one model or several seeds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd

from sigma_pyro.api import SigmaRecommender
from sigma_pyro.diagnostics import plots, report
from sigma_pyro.diagnostics.calibration import KS, summarise
from sigma_pyro.diagnostics.draws import draw_posterior
from sigma_pyro.diagnostics.inference_data import build_inference_data, build_run_data, run_summary
from sigma_pyro.diagnostics.mixture import MixtureHealth, mixture_health
from sigma_pyro.diagnostics.outputs import OUTPUTS
from sigma_pyro.diagnostics.psis import PsisResult, pareto_diagnostic
from sigma_pyro.errors import CheckpointError, ConfigError

# The Pareto tail fit needs at least 5 tail draws, and the tail is a fifth of the draws.
MIN_SAMPLES = 21


@dataclass
class DiagnosticsResult:
    out_dir: Path
    inference_data: az.InferenceData
    runs: az.InferenceData
    runs_table: pd.DataFrame
    psis: PsisResult  # of the first model
    mixture: MixtureHealth  # of the first model
    calibration: dict  # of the first model
    summary: dict  # the headline numbers of the report
    files: dict[str, Path] = field(default_factory=dict)


def _recommender(source) -> SigmaRecommender:
    rec = source if isinstance(source, SigmaRecommender) else SigmaRecommender.load(source)
    if rec.module is None:
        raise CheckpointError("no model to diagnose: fit() the recommender or pass a model folder")
    if rec.dataset is None or not rec.dataset.sequences:
        rec.load_data()
    return rec


def _check_compatible(first: SigmaRecommender, other: SigmaRecommender, where) -> None:
    if other.dataset.items.raw_ids != first.dataset.items.raw_ids:
        raise ConfigError(
            f"{where}: its item vocabulary differs from the first model's; "
            f"seed models must be trained on the same data"
        )
    a, b = first.config.model, other.config.model
    for name in ("prior", "hidden_size", "num_interests", "pseudo_inputs"):
        if getattr(a, name) != getattr(b, name):
            raise ConfigError(
                f"{where}: {name} is {getattr(b, name)!r}, the first model's is "
                f"{getattr(a, name)!r}; seed models must share the architecture"
            )


def diagnose(
    recommender_or_model_dir,
    out_dir,
    num_users: int = 500,
    num_samples: int = 100,
    seed: int = 0,
    extra_models=(),
    log=None,
    name: str | None = None,
) -> DiagnosticsResult:
    """Posterior diagnostics of a trained model on a seeded sample of test users; with
    ``extra_models`` (folders of independently trained seeds) each model is one chain.
    ``log`` receives progress lines; ``name`` labels the first model in the report (by
    default its folder).

    Writes the files of ``OUTPUTS`` to ``out_dir`` and returns their contents."""
    _check_arguments(num_users, num_samples)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    say = log or (lambda line: None)
    rec = _recommender(recommender_or_model_dir)
    if not rec.module.prior.stochastic:
        label = name or str(recommender_or_model_dir)
        raise ConfigError(
            f"{label}: trained with --prior deterministic, which has no posterior "
            f"over z to diagnose"
        )
    models = [rec, *_seed_models(rec, extra_models)]
    chain_names = _chain_names(recommender_or_model_dir, extra_models, name)
    sample = _sample_users(rec, num_users, seed)
    draws = _draw(models, sample.sequences, num_samples, seed, say, log)
    facts = _summarise(rec, draws, sample, num_samples, seed, chain_names)
    out.mkdir(parents=True, exist_ok=True)
    say(f"writing {out}")
    files = _write_outputs(out, facts, draws[0], sample.user_ids)
    _write_report(files["report.md"], facts, chain_names, files)
    return DiagnosticsResult(
        out,
        facts.idata,
        facts.runs,
        facts.runs_table,
        facts.psis[0],
        facts.mixture,
        facts.calibration,
        facts.summary,
        files,
    )


def _check_arguments(num_users: int, num_samples: int) -> None:
    if num_users < 1:
        raise ConfigError(f"--users must be at least 1, got {num_users}")
    if num_samples < MIN_SAMPLES:
        raise ConfigError(
            f"--samples must be at least {MIN_SAMPLES} (PSIS fits a Pareto tail "
            f"to the largest fifth of the draws), got {num_samples}"
        )


def _seed_models(first: SigmaRecommender, extra_models) -> list[SigmaRecommender]:
    models = []
    for where in extra_models:
        other = SigmaRecommender.load(where)
        _check_compatible(first, other, where)
        models.append(other)
    return models


def _chain_names(recommender_or_model_dir, extra_models, name: str | None) -> list[str]:
    first = name or (
        "the given model"
        if isinstance(recommender_or_model_dir, SigmaRecommender)
        else str(recommender_or_model_dir)
    )
    return [first, *map(str, extra_models)]


@dataclass
class _UserSample:
    """The seeded test users: full sequences (history + held-out item), raw ids, held-out."""

    sequences: list[np.ndarray]
    user_ids: list
    held_out: np.ndarray


def _sample_users(rec: SigmaRecommender, num_users: int, seed: int) -> _UserSample:
    split = rec.split
    total = len(split.test_target)
    chosen = np.sort(
        np.random.default_rng(seed).choice(total, min(num_users, total), replace=False)
    )
    return _UserSample(
        sequences=[np.append(split.test_history[i], split.test_target[i]) for i in chosen],
        user_ids=[rec.dataset.users[i] for i in chosen],
        held_out=split.test_target[chosen],
    )


def _draw(models, sequences, num_samples: int, seed: int, say, log) -> list:
    draws = []
    for chain, model in enumerate(models):
        say(
            f"model {chain + 1}/{len(models)}: {num_samples} guide draws for {len(sequences)} users"
        )
        draws.append(
            draw_posterior(
                model.module,
                sequences,
                num_samples,
                seed + chain,
                KS,
                model.config.eval.mask_history,
                log,
            )
        )
    return draws


@dataclass
class _Facts:
    """Everything computed from the draws that the files and the report are made of."""

    settings: dict
    psis: list[PsisResult]
    mixture: MixtureHealth
    calibration: dict
    spread: dict
    idata: az.InferenceData
    runs: az.InferenceData
    runs_table: pd.DataFrame
    seed_means: dict
    summary: dict


def _summarise(
    rec: SigmaRecommender,
    draws: list,
    sample: _UserSample,
    num_samples: int,
    seed: int,
    chain_names: list[str],
) -> _Facts:
    psis = [pareto_diagnostic(d) for d in draws]
    first = draws[0]
    mixture = mixture_health(first)
    calibration = summarise(first.calibration)

    config = rec.config
    kl_weight = config.train.kl_cap
    settings = {
        "users": len(sample.sequences),
        "samples": num_samples,
        "seed": seed,
        "prior": config.model.prior,
        "latent_dim": first.latent_dim,
        "kl_weight": kl_weight,
    }
    idata = build_inference_data(
        draws,
        psis,
        sample.user_ids,
        sample.held_out,
        attrs={
            **settings,
            "models": "; ".join(chain_names),
            "item_ids": "internal ids 1..N; model.json items[id - 1] is the raw id",
        },
    )
    runs = build_run_data(draws, chain_names)
    runs_table = run_summary(runs)
    seed_means = {
        name: runs.posterior[name].mean("draw").values.tolist() for name in runs.posterior.data_vars
    }
    spread = {
        "guide_scale": float(first.guide_scale.mean()),
        "prior_scale": float(first.prior_scale.mean()),
    }
    summary = {
        "settings": settings,
        "psis": psis[0].summary(),
        "mixture": mixture.summary(),
        "calibration": calibration,
        "spread": spread,
        "seeds": {"r_hat": runs_table["r_hat"].to_dict(), "means": seed_means},
    }
    return _Facts(
        settings,
        psis,
        mixture,
        calibration,
        spread,
        idata,
        runs,
        runs_table,
        seed_means,
        summary,
    )


def _write_outputs(out: Path, facts: _Facts, first, user_ids: list) -> dict[str, Path]:
    """The NetCDF files and figures; ``report.md`` is listed last but written separately,
    because the report lists every file including itself."""
    psis = facts.psis[0]
    files = {"diagnostics.nc": out / "diagnostics.nc", "runs.nc": out / "runs.nc"}
    facts.idata.to_netcdf(files["diagnostics.nc"])
    facts.runs.to_netcdf(files["runs.nc"])
    files["khat.png"] = plots.plot_khat(psis.khat, user_ids, psis.good_k, out / "khat.png")
    if facts.mixture.is_mixture:
        files["forest_interests.png"] = plots.plot_forest_interests(
            first, out / "forest_interests.png"
        )
        files["mixture_weights.png"] = plots.plot_mixture_weights(
            facts.idata, out / "mixture_weights.png"
        )
    files["predictive_rank.png"] = plots.plot_predictive_rank(
        first.calibration, facts.calibration, out / "predictive_rank.png"
    )
    files["report.md"] = out / "report.md"
    return files


def _write_report(path: Path, facts: _Facts, chain_names: list[str], files: dict) -> None:
    text = report.render(
        title=chain_names[0],
        settings=facts.settings,
        psis=facts.summary["psis"],
        mixture=facts.mixture,
        calibration=facts.calibration,
        spread=facts.spread,
        runs_table=facts.runs_table,
        seed_means=facts.seed_means,
        chain_names=chain_names,
        files={name: OUTPUTS[name] for name in files},
    )
    path.write_text(text, encoding="utf-8")
