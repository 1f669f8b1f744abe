"""The comparison runner (results, summary, resumption), the IWAE log-likelihood and the
interest analysis (NMI against planted structure, diversity)."""

from __future__ import annotations

import contextlib
import io
import math
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from scipy import stats

import sigma_pyro.experiments.compare as compare
import sigma_pyro.experiments.measure as measure
from sigma_pyro.api import SigmaRecommender
from sigma_pyro.cli.main import main
from sigma_pyro.data.batching import TrainingBatches
from sigma_pyro.errors import ConfigError, TrainingError
from sigma_pyro.evaluation.interest_analysis import (
    chance_nmi,
    item_clusters,
    nmf_item_topics,
    normalized_mutual_information,
    planted_recovery,
    recommendation_diversity,
    synthetic_labels,
)
from sigma_pyro.experiments.metrics import paired_comparison
from sigma_pyro.inference.iwae import (
    _deterministic_parts,
    _per_sequence,
    iwae_log_likelihood,
    log_weights,
)

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "synthetic_users": 150,
    "synthetic_items": 60,
    "synthetic_categories": 4,
    "hidden_size": 16,
    "num_heads": 2,
    "max_seq_length": 10,
    "batch_size": 64,
    "num_interests": 4,
    "pseudo_inputs": 4,
    "epochs": 1,
    "progress": False,
}
TINY_FLAGS = [
    word
    for name, value in TINY.items()
    if name != "progress"
    for word in ("--" + name.replace("_", "-"), str(value))
] + ["--no-progress"]


@pytest.fixture
def count_runs(monkeypatch):
    """Counts trainings by wrapping the runner's per-run function."""
    calls = []
    original = compare.train_and_measure

    def counted(config, run_dir, iwae_samples, log):
        calls.append((config.model.prior, config.train.seed))
        return original(config, run_dir, iwae_samples, log)

    monkeypatch.setattr(compare, "train_and_measure", counted)
    return calls


def quiet_main(argv) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main([str(a) for a in argv])


# -- the runner ----------------------------------------------------------------------------------


def test_grid_writes_results_and_summary_and_resumes(tmp_path, count_runs, monkeypatch):
    out = tmp_path / "grid"
    argv = [
        "compare",
        "--priors",
        "normal,sigma",
        "--seeds",
        "2",
        "--out",
        out,
        "--iwae-samples",
        "3",
        *TINY_FLAGS,
    ]
    assert quiet_main(argv) == 0
    assert sorted(count_runs) == [("normal", 0), ("normal", 1), ("sigma", 0), ("sigma", 1)]

    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == list(compare.COLUMNS)
    # Seed-major, so that an interrupted grid holds complete seeds.
    assert list(zip(results["prior"], results["seed"], strict=True)) == [
        ("normal", 0),
        ("sigma", 0),
        ("normal", 1),
        ("sigma", 1),
    ]
    assert (results["status"] == "ok").all()
    for metric in compare.METRICS:
        assert results[metric].between(0, 1).all(), metric
    assert (results["ndcg@10"] <= results["recall@10"] + 1e-9).all()
    assert (results["iwae_per_token"] < 0).all() and (results["final_elbo_per_token"] < 0).all()
    assert results["diversity@20"].between(1, 4).all()  # 4 planted categories
    assert (results["epochs"] == 1).all() and (results["wall_seconds"] >= 0).all()
    sigma = results[results["prior"] == "sigma"]
    normal = results[results["prior"] == "normal"]
    assert sigma["nmi_items"].between(0, 1).all() and sigma["diversity_own@20"].notna().all()
    assert normal["nmi_items"].isna().all() and normal["diversity_own@20"].isna().all()
    for run_dir in results["run_dir"]:
        assert (out / run_dir / "model.pt").is_file()
    assert not list(out.glob(".*.tmp"))

    summary = (out / "summary.md").read_text()
    assert "sigma-pyro compare" in summary and "--priors normal,sigma" in summary
    assert re.search(r"`([0-9a-f]{40}|unknown)", summary)
    assert re.search(r"^\| normal \| 2 \| \d\.\d{4} ± \d\.\d{4} \|", summary, re.M)
    assert re.search(r"^\| sigma \| 2 \| ", summary, re.M)
    paired = re.search(r"^\| sigma \| 2 \| ([+-]\d\.\d{4}) \| ([0-9.]+|n/a) \|", summary, re.M)
    assert paired, summary
    expected = sigma["ndcg@10"].to_numpy() - normal["ndcg@10"].to_numpy()
    assert float(paired.group(1)) == pytest.approx(expected.mean(), abs=1e-4)
    assert "Recovery of the planted structure" in summary
    assert (out / "baselines.json").is_file()

    # Resuming the same grid trains nothing; widening it trains only the new seed.
    count_runs.clear()
    assert quiet_main(argv) == 0
    assert count_runs == []
    assert pd.read_csv(out / "results.csv").equals(results)

    count_runs.clear()
    monkeypatch.setattr(sys, "argv", ["compare.py", *map(str, argv[1:])])
    sys.argv[sys.argv.index("--seeds") + 1] = "3"
    with pytest.raises(SystemExit) as info, contextlib.redirect_stdout(io.StringIO()):
        runpy.run_path(str(REPO / "scripts" / "compare.py"), run_name="__main__")
    assert info.value.code == 0
    assert sorted(count_runs) == [("normal", 2), ("sigma", 2)]
    assert len(pd.read_csv(out / "results.csv")) == 6
    assert re.search(r"^\| sigma \| 3 \| ", (out / "summary.md").read_text(), re.M)


def test_a_diverging_run_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    def fake(config, run_dir, iwae_samples, log):
        if config.model.prior == "gmm":
            raise TrainingError("non-finite ELBO at epoch 1, step 1")
        return {m: 0.5 for m in compare.METRICS}

    monkeypatch.setattr(compare, "train_and_measure", fake)
    results = compare.run_comparison(
        tmp_path,
        ["normal", "gmm"],
        1,
        "synthetic",
        TINY,
        iwae_samples=2,
        progress=False,
        log=lambda line: None,
    )
    assert list(results["status"]) == ["ok", "failed: non-finite ELBO at epoch 1, step 1"]
    summary = (tmp_path / "summary.md").read_text()
    assert "## Failed runs" in summary and "gmm seed 0" in summary
    assert "| gmm | 0 | n/a |" in summary


def test_parallel_jobs_run_the_whole_grid(tmp_path):
    results = compare.run_comparison(
        tmp_path, ["normal", "sigma"], 1, "synthetic", TINY, iwae_samples=1, progress=False, jobs=2
    )
    assert sorted(results["prior"]) == ["normal", "sigma"] and (results["status"] == "ok").all()
    assert len(pd.read_csv(tmp_path / "results.csv")) == 2
    assert (tmp_path / "runs" / "sigma-seed0" / "model.pt").is_file()
    with pytest.raises(ConfigError, match="--jobs must be at least 1, got 0"):
        compare.run_comparison(tmp_path, ["normal"], 1, "synthetic", TINY, jobs=0)


def test_zero_iwae_samples_skips_the_held_out_likelihood(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the IWAE was computed")

    monkeypatch.setattr(measure, "iwae_log_likelihood", refuse)
    results = compare.run_comparison(
        tmp_path,
        ["normal"],
        1,
        "synthetic",
        TINY,
        iwae_samples=0,
        progress=False,
        log=lambda line: None,
    )
    assert results["status"].tolist() == ["ok"] and results["iwae_per_token"].isna().all()
    assert "--iwae-samples 0" in (tmp_path / "summary.md").read_text()
    with pytest.raises(ConfigError, match="--iwae-samples must be 0 .skip. or more, got -1"):
        compare.run_comparison(tmp_path, ["normal"], 1, "synthetic", TINY, iwae_samples=-1)


@pytest.mark.parametrize(
    "priors,overrides,needle",
    [
        (["normal", "sigma"], {"prior": "sigma"}, "--priors"),
        (["normal", "sigma"], {"analytic_kl": True}, "--analytic-kl"),
        (["normal", "nope"], {}, "--prior"),
        (["normal", "normal"], {}, "distinct"),
    ],
)
def test_impossible_grids_fail_before_training(tmp_path, count_runs, priors, overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        compare.run_comparison(
            tmp_path, priors, 1, "synthetic", {**TINY, **overrides}, progress=False
        )
    assert count_runs == []


def test_paired_comparison_matches_scipy():
    rows = [("normal", s, v) for s, v in enumerate([0.10, 0.12, 0.11])]
    rows += [("sigma", s, v) for s, v in enumerate([0.13, 0.14, 0.15])]
    rows += [("gmm", 0, 0.2)]
    results = pd.DataFrame(
        [{"prior": p, "seed": s, "status": "ok", "ndcg@10": v} for p, s, v in rows]
    )
    result = paired_comparison(results, "ndcg@10", "sigma")
    assert result["pairs"] == 3
    assert result["difference"] == pytest.approx(0.03)
    assert result["p"] == pytest.approx(
        stats.ttest_rel([0.13, 0.14, 0.15], [0.10, 0.12, 0.11]).pvalue
    )
    one = paired_comparison(results, "ndcg@10", "gmm")
    assert one["pairs"] == 1 and math.isnan(one["p"])


def test_command_line_reproduces_the_settings():
    line = compare.command_line(
        "out",
        ["normal", "sigma"],
        2,
        "office",
        {"path": "data/x.txt", "epochs": 3, "train_prototypes": False, "ks": [10, 20]},
        20,
    )
    assert line == (
        "sigma-pyro compare --preset office --priors normal,sigma --seeds 2 "
        "--out out --iwae-samples 20 --data data/x.txt --epochs 3 "
        "--no-train-prototypes --ks 10,20"
    )


# -- NMI -----------------------------------------------------------------------------------------


def test_normalized_mutual_information():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert normalized_mutual_information(a, a) == pytest.approx(1.0)
    assert normalized_mutual_information(a, np.array([5, 5, 3, 3, 9, 9])) == pytest.approx(1.0)
    assert normalized_mutual_information(
        np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    ) == pytest.approx(0.0)
    # By hand: given either label of a, b is split 2/3 : 1/3, so I = H(b) - H(2/3, 1/3).
    labels, b = np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 1, 1, 2])
    entropy = lambda *p: -sum(x * math.log(x) for x in p)  # noqa: E731
    ha, hb = entropy(1 / 2, 1 / 2), entropy(2 / 6, 3 / 6, 1 / 6)
    mutual = hb - entropy(2 / 3, 1 / 3)
    assert normalized_mutual_information(labels, b) == pytest.approx(mutual / ((ha + hb) / 2))
    rng = np.random.default_rng(0)
    assert chance_nmi(rng.integers(0, 4, 2000), rng.integers(0, 4, 2000)) < 0.01


def test_nmf_topics_recover_planted_categories():
    rec = SigmaRecommender.from_preset("synthetic", **TINY)
    rec.load_data()
    planted, _ = synthetic_labels(rec.dataset, rec.synthetic)
    topics = nmf_item_topics(rec.split.test_history, rec.dataset.num_items, 4)
    assert topics[0] == -1 and len(topics) == rec.dataset.num_items + 1
    assert normalized_mutual_information(topics[1:], planted[1:]) > 0.8


@pytest.fixture(scope="module")
def trained_sigma():
    """SIGMA trained long enough on planted data for its prototypes to mean something."""
    pyro.clear_param_store()
    rec = SigmaRecommender.from_preset(
        "synthetic", **{**TINY, "synthetic_users": 300, "synthetic_items": 80, "epochs": 15}
    )
    rec.fit(log=lambda line: None)
    return rec


def test_sigma_recovers_planted_categories_above_chance(trained_sigma):
    rec = trained_sigma
    recovery = planted_recovery(rec.module, rec.dataset, rec.synthetic, rec.split.test_history)
    assert recovery["nmi_items"] > recovery["nmi_items_chance"] + 0.2
    assert recovery["nmi_items"] > 3 * recovery["nmi_items_chance"]
    assert recovery["nmi_users"] > 2 * recovery["nmi_users_chance"]


def test_gmm_and_vamp_cluster_items_and_users():
    for prior, clusters in (("gmm", 4), ("vamp", 4)):
        pyro.clear_param_store()
        rec = SigmaRecommender.from_preset("synthetic", **{**TINY, "prior": prior})
        rec.build_module()
        items = item_clusters(rec.module)
        assert items.shape == (rec.dataset.num_items + 1,) and items[0] == -1
        assert set(items[1:]) <= set(range(clusters))
        recovery = planted_recovery(rec.module, rec.dataset, rec.synthetic, rec.split.test_history)
        assert 0 <= recovery["nmi_items"] <= 1 and 0 <= recovery["nmi_users"] <= 1


def test_diversity_counts_distinct_categories_of_unseen_top_items(trained_sigma):
    rec = trained_sigma
    histories = rec.split.test_history[:40]
    one = np.zeros(rec.dataset.num_items + 1, dtype=int)
    assert recommendation_diversity(rec.module, histories, one) == 1.0
    distinct = np.arange(rec.dataset.num_items + 1)
    assert recommendation_diversity(rec.module, histories, distinct, k=7) == 7.0
    planted, _ = synthetic_labels(rec.dataset, rec.synthetic)
    assert 1.0 <= recommendation_diversity(rec.module, histories, planted) <= 4.0


# -- IWAE ----------------------------------------------------------------------------------------


def test_per_sequence_sums_map_tokens_back_to_rows():
    mask = torch.tensor([[True, True, False], [True, False, False]])
    tokens = {"log_prob": torch.tensor([1.0, 2.0, 4.0])}
    torch.testing.assert_close(_per_sequence(tokens, mask), torch.tensor([3.0, 4.0]))
    grid = {"log_prob": torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])}
    torch.testing.assert_close(_per_sequence(grid, mask), torch.tensor([3.0, 3.0]))
    last = {"log_prob": torch.tensor([[5.0], [6.0]])}
    torch.testing.assert_close(_per_sequence(last, mask), torch.tensor([5.0, 6.0]))


def test_one_sample_weight_is_the_elbo_of_trace_elbo():
    pyro.clear_param_store()
    rec = SigmaRecommender.from_preset("synthetic", **{**TINY, "prior": "normal"})
    module = rec.build_module().eval()
    batch = next(iter(TrainingBatches(rec.dataset.sequences[:16], 16, 10, shuffle=False)))
    pyro.set_rng_seed(3)
    weights = log_weights(module, batch)
    pyro.set_rng_seed(3)
    loss = Trace_ELBO().loss(module.model, module.guide, batch, 1.0, 1.0)
    assert weights.sum().item() == pytest.approx(-loss, rel=1e-5)


def test_precomputed_encoding_and_interests_change_nothing(trained_sigma):
    """IWAE hands the once-computed encoder output and interests to model and guide as an
    argument; the weights must be those of computing them in every trace."""
    module = trained_sigma.module.eval()
    batch = next(iter(TrainingBatches(trained_sigma.dataset.sequences[:16], 16, 10, shuffle=False)))
    pyro.set_rng_seed(7)
    plain = log_weights(module, batch, include_interests=True)
    precomputed = _deterministic_parts(module, batch)
    assert precomputed.interests is not None and precomputed.encoding is not None
    pyro.set_rng_seed(7)
    cached = log_weights(module, batch, include_interests=True, precomputed=precomputed)
    torch.testing.assert_close(cached, plain)
    assert not {"encode", "extract_interests"} & set(vars(module)), (
        "nothing on the module is replaced"
    )


def test_iwae_scores_a_sampled_softmax_model_with_the_exact_likelihood():
    pyro.clear_param_store()
    sampled = SigmaRecommender.from_preset(
        "synthetic", **{**TINY, "prior": "normal", "likelihood": "sampled", "negatives": 5}
    )
    module = sampled.build_module()
    full = SigmaRecommender.from_preset("synthetic", **{**TINY, "prior": "normal"})
    reference = full.build_module()
    reference.load_state_dict(module.state_dict())
    sequences = sampled.dataset.sequences[:20]
    results = []
    for m in (module, reference):
        pyro.set_rng_seed(4)
        results.append(iwae_log_likelihood(m, sequences, 2)["per_sequence"])
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5)
    assert module.config.likelihood == "sampled", "the setting is restored"


def test_iwae_bound_is_tighter_than_the_elbo(trained_sigma):
    rec = trained_sigma
    sequences = rec.dataset.sequences[:120]
    max_length = rec.config.model.max_seq_length
    pyro.set_rng_seed(0)
    rec.module.train()
    tight = iwae_log_likelihood(rec.module, sequences, 20, batch_size=64)
    assert rec.module.training, "the module's mode is restored"
    loose = iwae_log_likelihood(rec.module, sequences, 1, batch_size=64)
    assert tight["per_sequence"].shape == (120,) and np.isfinite(tight["per_sequence"]).all()
    assert tight["num_tokens"] == sum(min(len(s) - 1, max_length) for s in sequences)
    assert tight["per_sequence"].mean() >= loose["per_sequence"].mean()
    assert tight["per_token"] == pytest.approx(tight["per_sequence"].sum() / tight["num_tokens"])
    # The interest sites score the last item a second time: a lower, different number.
    both = iwae_log_likelihood(rec.module, sequences, 20, include_interests=True)
    assert both["per_token"] < tight["per_token"]
