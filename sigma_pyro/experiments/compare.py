"""The prior comparison: train every (prior, seed) of a grid on the same data and settings,
and report test metrics, held-out likelihood, recommendation diversity and (on synthetic
data) how well the learned clusters recover the planted ones.

    from sigma_pyro.experiments.compare import run_comparison
    run_comparison("runs/compare", priors=["normal", "sigma"], seeds=3, preset="synthetic")

Writes ``OUT/results.csv`` (one row per run, rewritten atomically after each run, so an
interrupted grid resumes: rows already there are skipped, and a run interrupted mid-training
continues from its ``last.pt``), ``OUT/summary.md`` and ``OUT/baselines.json``; each run's
model goes to ``OUT/runs/<prior>-seed<k>``. Seeds change the initialisation and the order of
the batches, never the data, so runs of different priors with the same seed are paired.
"""

from __future__ import annotations

import io
import math
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from sigma_pyro.config import Config, load_config, nest_overrides
from sigma_pyro.errors import ConfigError
from sigma_pyro.evaluation.interest_analysis import (
    item_clusters,
    nmf_item_topics,
    planted_recovery,
    recommendation_diversity,
    synthetic_labels,
)
from sigma_pyro.experiments.parallel import check_jobs, run_all
from sigma_pyro.experiments.reporting import (
    git_revision,
    markdown_table,
    mean_std,
    number,
    override_flags,
)
from sigma_pyro.inference.iwae import iwae_log_likelihood
from sigma_pyro.runtime.checkpoint import (
    STATE_FILE,
    atomic_write_bytes,
    atomic_write_json,
    read_json,
)
from sigma_pyro.runtime.progress import progress_bar

DEFAULT_PRIORS = ("normal", "gmm", "vamp", "sigma", "sigma-uniform")
METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr")
PAIRED = ("ndcg@10", "recall@20")
DIVERSITY_K = 20
COLUMNS = (
    "prior",
    "seed",
    "status",
    *METRICS,
    "final_elbo_per_token",
    "iwae_per_token",
    f"diversity@{DIVERSITY_K}",
    f"diversity_own@{DIVERSITY_K}",
    "nmi_items",
    "nmi_items_chance",
    "nmi_users",
    "nmi_users_chance",
    "nmi_users_oracle",
    "best_epoch",
    "epochs",
    "stopped_early",
    "wall_seconds",
    "run_dir",
    "code",
)
REFERENCE = "normal"
RESULTS, SUMMARY, BASELINES = "results.csv", "summary.md", "baselines.json"


def command_line(
    out_dir,
    priors: Sequence[str],
    seeds: int,
    preset: str | None,
    overrides: dict,
    iwae_samples: int,
) -> str:
    """The ``sigma-pyro compare`` invocation that reproduces a grid."""
    words = ["sigma-pyro", "compare"]
    if preset is not None:
        words += ["--preset", preset]
    words += [
        "--priors",
        ",".join(priors),
        "--seeds",
        str(seeds),
        "--out",
        str(out_dir),
        "--iwae-samples",
        str(iwae_samples),
        *override_flags(overrides),
    ]
    return shlex.join(words)


def _grid_configs(
    priors: Sequence[str], seeds: int, preset: str | None, overrides: dict
) -> tuple[Config, dict[tuple[str, int], Config]]:
    """The base configuration and one validated configuration per (prior, seed), so that an
    impossible combination fails before anything trains."""
    if "prior" in overrides:
        raise ConfigError("compare: give the priors to compare with --priors, not --prior")
    if not priors or len(set(priors)) != len(priors):
        raise ConfigError(f"--priors must name distinct priors, got {','.join(priors)!r}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    nested = nest_overrides(overrides)
    base = load_config(preset, nested)
    configs = {}
    # Seed-major: an interrupted grid holds whole seeds, each a complete paired comparison.
    for seed in range(base.train.seed, base.train.seed + seeds):
        for prior in priors:
            values = {
                **nested,
                "model": {**nested.get("model", {}), "prior": prior},
                "train": {**nested.get("train", {}), "seed": seed},
            }
            try:
                configs[prior, seed] = load_config(preset, values)
            except ConfigError as err:
                raise ConfigError(f"--priors {prior}: {err}") from None
    return base, configs


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return pd.read_csv(path).to_dict("records")


def _table_of(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _reference_categories(rec, split) -> tuple[np.ndarray, str]:
    """One item partition for every prior's diversity (see :mod:`interest_analysis`)."""
    if rec.synthetic is not None:
        return synthetic_labels(rec.dataset, rec.synthetic)[0], "planted categories"
    k = rec.config.model.num_interests
    topics = nmf_item_topics(split.test_history, rec.dataset.num_items, k)
    return topics, f"{k} NMF topics of the user-item matrix of the test histories"


def train_and_measure(
    config: Config, run_dir: Path, iwae_samples: int, log: Callable[[str], None]
) -> dict:
    """Train one configuration and measure it: one row of ``results.csv``."""
    from sigma_pyro.api import SigmaRecommender

    rec = SigmaRecommender(config)
    rec.load_data()
    started = time.perf_counter()
    summary = rec.fit(out_dir=run_dir, resume=(run_dir / STATE_FILE).is_file(), log=log)
    seconds = time.perf_counter() - started
    split = rec.split
    module, cfg = rec.module, rec.config
    test = rec.evaluate("test")
    # The unannealed ELBO of the next-item part (what every prior shares), per token.
    terms = summary.history[-1].terms if summary.history else {}
    elbo = -(terms["nll"] + terms["kl_z"]) if terms else math.nan
    # The training batch size is known to fit in memory with the full softmax at every
    # position, which the IWAE computes too.
    # On the larger catalogs the IWAE costs about S/3 training epochs; 0 skips it.
    iwae = (
        {"per_token": math.nan}
        if iwae_samples == 0
        else iwae_log_likelihood(
            module,
            rec.dataset.sequences,
            iwae_samples,
            cfg.train.batch_size,
            device=cfg.train.device,
        )
    )
    reference, _ = _reference_categories(rec, split)
    diversity = dict(
        k=DIVERSITY_K,
        batch_size=cfg.eval.eval_batch_size,
        item_chunk_size=cfg.eval.item_chunk_size,
        device=cfg.train.device,
    )
    own = item_clusters(module)
    row = {
        **{m: test[m] for m in METRICS},
        "final_elbo_per_token": elbo,
        "iwae_per_token": iwae["per_token"],
        f"diversity@{DIVERSITY_K}": recommendation_diversity(
            module, split.test_history, reference, **diversity
        ),
        f"diversity_own@{DIVERSITY_K}": (
            math.nan
            if own is None
            else recommendation_diversity(module, split.test_history, own, **diversity)
        ),
        "best_epoch": summary.best_epoch,
        "epochs": summary.epochs_run,
        "stopped_early": summary.stopped_early,
        "wall_seconds": round(seconds, 1),
    }
    if rec.synthetic is not None:
        row.update(planted_recovery(module, rec.dataset, rec.synthetic, split.test_history))
    return row


def run_comparison(
    out_dir: str | Path,
    priors: Sequence[str] = DEFAULT_PRIORS,
    seeds: int = 3,
    preset: str | None = None,
    overrides: dict | None = None,
    iwae_samples: int = 20,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    jobs: int = 1,
) -> pd.DataFrame:
    """Run (or resume) the grid ``priors x seeds`` and write the results and the summary.

    ``overrides`` are flat settings as for :meth:`SigmaRecommender.from_preset` (``path``,
    ``epochs``, ...); seeds are ``seed, seed + 1, ...`` from the configured seed. A run whose
    training diverges is recorded with its error as status and the grid goes on. ``jobs``
    runs train side by side (:mod:`sigma_pyro.experiments.parallel`; their logs go to
    stderr). Returns the results table.
    """
    out = Path(out_dir)
    priors = list(priors)
    overrides = dict(overrides or {})
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    check_jobs(jobs)
    if iwae_samples < 0:
        raise ConfigError(f"--iwae-samples must be 0 (skip) or more, got {iwae_samples}")
    base, configs = _grid_configs(priors, seeds, preset, overrides)
    command = command_line(out, priors, seeds, preset, overrides, iwae_samples)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / BASELINES).is_file():
        atomic_write_json(_baselines(base), out / BASELINES)

    # The code a run trained with, taken before training: commits made while a long grid
    # runs must not be credited with its results.
    revision = git_revision()
    rows = _read_rows(out / RESULTS)
    done = {(str(row["prior"]), int(row["seed"])) for row in rows}
    todo = [key for key in configs if key not in done]
    bar = progress_bar(
        total=len(configs), enabled=progress, initial=len(configs) - len(todo), desc="compare"
    )

    def run_dir(key: tuple[str, int]) -> Path:
        return out / "runs" / f"{key[0]}-seed{key[1]}"

    def call(key: tuple[str, int]) -> tuple:
        return (
            train_and_measure,
            (configs[key], run_dir(key), iwae_samples),
            f"[{key[0]} seed {key[1]}] ",
        )

    def record(key: tuple[str, int], row: dict) -> None:
        rows.append(
            {
                **row,
                "prior": key[0],
                "seed": key[1],
                "run_dir": str(run_dir(key).relative_to(out)),
                "code": revision,
            }
        )
        atomic_write_bytes(out / RESULTS, _table_of(rows).to_csv(index=False).encode("utf-8"))
        bar.update(1)

    run_all(
        {key: call(key) for key in todo},
        jobs,
        record,
        log,
        on_start=lambda key: bar.set_postfix_str(f"{key[0]} seed {key[1]}"),
    )
    bar.close()
    results = _table_of(rows)
    write_summary(out, results, command)
    return results


def _baselines(config: Config) -> dict:
    from sigma_pyro.api import SigmaRecommender

    rec = SigmaRecommender(config)
    rec.load_data()
    _, description = _reference_categories(rec, rec.split)
    return {
        **rec.baselines("test"),
        "diversity_reference": description,
        "num_users": rec.dataset.num_users,
        "num_items": rec.dataset.num_items,
        "data": rec.dataset.source,
    }


# -- the summary --------------------------------------------------------------------------------


def paired_comparison(
    results: pd.DataFrame, metric: str, prior: str, reference: str = REFERENCE
) -> dict:
    """Mean difference ``prior - reference`` of ``metric`` over the seeds both have, and
    the paired t-test p-value (NaN with fewer than two pairs or no variation)."""
    ok = results[results["status"] == "ok"]
    a = ok[ok["prior"] == prior].set_index("seed")[metric].astype(float)
    b = ok[ok["prior"] == reference].set_index("seed")[metric].astype(float)
    seeds = sorted(set(a.index) & set(b.index))
    a, b = a.loc[seeds].to_numpy(), b.loc[seeds].to_numpy()
    difference = float(np.mean(a - b)) if seeds else math.nan
    p = math.nan
    if len(seeds) >= 2 and np.ptp(a - b) > 0:
        p = float(stats.ttest_rel(a, b).pvalue)
    return {"pairs": len(seeds), "difference": difference, "p": p}


def render_summary(
    results: pd.DataFrame, command: str, revision: str, baselines: dict | None = None
) -> str:
    ok = results[results["status"] == "ok"]
    priors = list(dict.fromkeys(results["prior"]))
    text = io.StringIO()
    write = lambda line="": print(line, file=text)  # noqa: E731
    write("# Prior comparison\n")
    write(f"- command: `{command}`")
    write(f"- code: `{revision}`")
    if baselines:
        write(
            f"- data: {baselines['data']}: {baselines['num_users']} users, "
            f"{baselines['num_items']} items"
        )
    write(f"- runs: {len(ok)} finished of {len(results)} recorded\n")

    columns = [
        *METRICS,
        "iwae_per_token",
        "final_elbo_per_token",
        f"diversity@{DIVERSITY_K}",
        f"diversity_own@{DIVERSITY_K}",
        "epochs",
        "wall_seconds",
    ]
    write("## Test metrics, mean ± std over seeds\n")
    rows = []
    for prior in priors:
        runs = ok[ok["prior"] == prior]
        rows.append(
            [prior, len(runs)]
            + [
                mean_std(
                    runs[c],
                    1
                    if c in ("epochs", "wall_seconds")
                    else 2
                    if c.startswith(("iwae", "final_elbo", "diversity"))
                    else 4,
                )
                for c in columns
            ]
        )
    write(markdown_table(["prior", "seeds", *columns], rows))
    if baselines:
        reference = " ".join(
            f"{name} ndcg@10={values['ndcg@10']:.4f} recall@20={values['recall@20']:.4f}"
            for name, values in baselines.items()
            if isinstance(values, dict) and "ndcg@10" in values
        )
        write(f"\nReference points on the same test split: {reference}.")
    write(
        "\nIWAE and ELBO are log-likelihoods per predicted item (higher is better); the "
        "IWAE bound is on the test sequences, the ELBO on the last epoch's monitoring "
        "batch of training data. diversity@20: distinct categories among a user's top 20 "
        f"({(baselines or {}).get('diversity_reference', 'reference partition')}); "
        "diversity_own@20 uses the prior's own item clusters. epochs: epochs run before "
        "early stopping; wall_seconds: training time.\n"
    )

    write(f"## Paired comparison with `{REFERENCE}` (same seeds)\n")
    if REFERENCE not in set(ok["prior"]):
        write(f"No finished `{REFERENCE}` runs to compare with.\n")
    else:
        rows = []
        for prior in priors:
            if prior == REFERENCE:
                continue
            paired = [paired_comparison(results, metric, prior) for metric in PAIRED]
            rows.append(
                [prior, paired[0]["pairs"]]
                + [
                    cell
                    for result in paired
                    for cell in (
                        number(result["difference"], signed=True),
                        number(result["p"], 3),
                    )
                ]
            )
        header = ["prior", "pairs"]
        for metric in PAIRED:
            header += [f"Δ {metric}", "p (paired t)"]
        write(markdown_table(header, rows))
        write(
            "\nΔ is the mean over seeds of (prior − normal); p is scipy.stats.ttest_rel, "
            "n/a with fewer than two pairs.\n"
        )

    if ok["nmi_items"].notna().any():
        write("## Recovery of the planted structure (NMI)\n")
        rows = [
            [prior]
            + [
                mean_std(ok[ok["prior"] == prior][c], 3)
                for c in (
                    "nmi_items",
                    "nmi_items_chance",
                    "nmi_users",
                    "nmi_users_chance",
                    "nmi_users_oracle",
                )
            ]
            for prior in priors
        ]
        write(
            markdown_table(
                ["prior", "items", "items (chance)", "users", "users (chance)", "users (oracle)"],
                rows,
            )
        )
        write(
            "\nItems: argmax prototype (sigma) or mixture component (gmm, vamp) vs planted "
            "category; users: strongest learned interest or component vs strongest planted "
            "interest. Chance: the same against a random permutation of the labels. Oracle: "
            "the majority planted category of each history vs the strongest planted "
            "interest, the most that the histories tell.\n"
        )

    failed = results[results["status"] != "ok"]
    if len(failed):
        write("## Failed runs\n")
        for _, row in failed.iterrows():
            write(f"- {row['prior']} seed {row['seed']}: {row['status']}")
    return text.getvalue()


def write_summary(out: Path, results: pd.DataFrame, command: str) -> None:
    baselines = read_json(out / BASELINES) if (out / BASELINES).is_file() else None
    codes = results["code"].dropna().astype(str).unique() if "code" in results else []
    text = render_summary(results, command, ", ".join(sorted(codes)) or git_revision(), baselines)
    atomic_write_bytes(out / SUMMARY, text.encode("utf-8"))
