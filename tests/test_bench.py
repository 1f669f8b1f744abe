"""The benchmark runs and reports what it promises; the plain objective equals Pyro's."""

import json

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from sigma_pyro.bench.scaling import measure_one
from sigma_pyro.cli.main import main
from sigma_pyro.config import ModelConfig
from sigma_pyro.data.batching import TrainingBatches
from sigma_pyro.inference.plain_elbo import plain_negative_elbo
from sigma_pyro.nn.module import SigmaModule


@pytest.mark.parametrize("prior", ["sigma", "normal"])
def test_plain_objective_equals_trace_elbo(prior):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 31, size=rng.integers(3, 10)) for _ in range(20)]
    batch = next(iter(TrainingBatches(seqs, 20, 8, shuffle=False)))
    torch.manual_seed(0)
    module = SigmaModule(
        30, ModelConfig(prior=prior, hidden_size=16, num_heads=2, max_seq_length=8)
    ).eval()
    pyro.set_rng_seed(3)
    pyro_loss = Trace_ELBO().loss(module.model, module.guide, batch, 0.1, 0.2)
    pyro.set_rng_seed(3)
    plain_loss = plain_negative_elbo(module, batch, 0.1, 0.2).item()
    # Same draws in the same order: the two programs compute the same number.
    assert plain_loss == pytest.approx(pyro_loss, rel=1e-5)


def test_bench_writes_its_report(tmp_path, capsys):
    rng = np.random.default_rng(0)
    lines = [
        f"u{u} " + " ".join(str(i) for i in rng.choice(60, size=rng.integers(4, 9), replace=False))
        for u in range(120)
    ]
    data = tmp_path / "data.txt"
    data.write_text("\n".join(lines) + "\n")
    bench = ["bench", "--data", str(data), "--preset", "synthetic", "--hidden-size", "16",
             "--num-heads", "2", "--batch-size", "32", "--bench-epochs", "1"]  # fmt: skip
    code = main([*bench, "--out", str(tmp_path / "out")])
    assert code == 0
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    for key in (
        "epoch_seconds",
        "eval_seconds",
        "peak_rss_mb",
        "pyro_over_plain_ratio",
        "flops_per_epoch",
        "sequences_per_second",
    ):
        assert report[key] > 0, key
    assert report["users"] == 120 and report["eval_users"] == 120
    assert "mixed_precision_epoch_seconds" not in report
    phases = report["peak_rss_mb_after"]
    assert list(phases) == ["svi", "plain", "evaluation"]
    assert sorted(phases.values()) == list(phases.values())  # a peak never falls
    assert phases["evaluation"] <= report["peak_rss_mb"]

    code = main([*bench, "--mixed-precision", "--out", str(tmp_path / "amp")])
    assert code == 0
    report = json.loads((tmp_path / "amp" / "bench.json").read_text())
    assert report["mixed_precision"] is True
    assert report["mixed_precision_epoch_seconds"] > 0
    assert report["float32_over_mixed_precision_ratio"] > 0
    assert list(report["peak_rss_mb_after"]) == [
        "svi",
        "svi_mixed_precision",
        "plain",
        "evaluation",
    ]


def test_scaling_measurement_runs_for_both_likelihoods():
    for likelihood in ("full", "sampled"):
        row = measure_one(500, likelihood, negatives=50, batch_size=64, hidden_size=16, steps=1)
        assert row["status"] == "ok" and row["step_seconds"] > 0 and row["eval_seconds"] > 0
