"""Posterior diagnostics: the InferenceData round-trips through NetCDF with the documented
groups and dims, the report and figures are written, PSIS k-hat flags a planted bad guide,
seeds become chains, calibration is judged right on a predictive calibrated by construction,
and the CLI gives one-line errors with exit status 2 for bad input."""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest
import torch

from helpers import run_main
from sigma_pyro.api import SigmaRecommender
from sigma_pyro.diagnostics import diagnose
from sigma_pyro.diagnostics.calibration import KS, score_users, summarise
from sigma_pyro.diagnostics.draws import draw_posterior

HIDDEN = 16
# The guide is trained on the unannealed ELBO (KL weight 1 per dimension, no ramp) for long
# enough that its scales grow to the posterior's: the default annealed KL leaves it so much
# narrower than the unannealed posterior that k-hat is far above 1 for every user, leaving no
# room to see a planted bad guide.
TINY = [
    "--synthetic-users",
    "200",
    "--synthetic-items",
    "80",
    "--synthetic-categories",
    "4",
    "--hidden-size",
    str(HIDDEN),
    "--num-heads",
    "2",
    "--max-seq-length",
    "10",
    "--batch-size",
    "64",
    "--no-progress",
]
# Dropout on z at the decoder's input makes the decoder tolerate a wide posterior; without
# it this tiny model's posterior is already so narrow that k-hat is far above 1 for the good
# guide too (median 1.6), again leaving no room to see the planted bad one.
UNANNEALED = [
    "--epochs",
    "12",
    "--patience",
    "20",
    "--lr",
    "0.01",
    "--kl-cap",
    str(HIDDEN),
    "--kl-anneal-steps",
    "0",
    "--decoder-input-dropout",
    "0.2",
]
USERS, SAMPLES = 40, 40


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sigma")
    code, _, err = run_main(["train", *TINY, *UNANNEALED, "--out", out])
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def normal_model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("normal")
    code, _, err = run_main(["train", *TINY, "--prior", "normal", "--epochs", "1", "--out", out])
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def diagnosed(model_dir, tmp_path_factory):
    return diagnose(
        model_dir, tmp_path_factory.mktemp("diag"), num_users=USERS, num_samples=SAMPLES, seed=0
    )


def test_netcdf_round_trip_has_the_documented_groups_dims_and_shapes(diagnosed, model_dir):
    idata = az.from_netcdf(diagnosed.files["diagnostics.nc"])
    assert {
        "posterior",
        "posterior_predictive",
        "log_likelihood",
        "observed_data",
        "sample_stats",
        "user_diagnostics",
    } <= set(idata.groups())
    post = idata.posterior
    assert post["z"].dims == ("chain", "draw", "user", "latent")
    assert post["z"].shape == (1, SAMPLES, USERS, HIDDEN)
    # The interests are deterministic given the history: no posterior variable of their own.
    assert "interests" not in post
    for name in ("mixture_weights", "responsibility"):
        assert post[name].dims == ("chain", "draw", "user", "interest")
        np.testing.assert_allclose(post[name].sum("interest"), 1.0, atol=1e-5)
    # The history fixes the prior weights: identical across draws.
    assert float(post["mixture_weights"].std("draw").max()) == 0.0

    rec = SigmaRecommender.load(model_dir)
    predicted = idata.posterior_predictive["next_item"]
    assert predicted.dims == ("chain", "draw", "user")
    assert 1 <= int(predicted.min()) and int(predicted.max()) <= len(rec.dataset.items)
    assert idata.observed_data["next_item"].dims == ("user",)
    loglik = idata.log_likelihood["next_item"]
    assert loglik.shape == (1, SAMPLES, USERS) and float(loglik.max()) <= 0.0
    stats = idata.sample_stats
    np.testing.assert_allclose(stats["log_weight"], stats["lp"] - stats["log_q"], rtol=1e-6)

    per_user = idata.user_diagnostics
    assert per_user["khat"].dims == ("chain", "user")
    assert np.isfinite(per_user["khat"]).all()
    assert list(per_user["user"].values) == list(post["user"].values)


def test_report_and_figures_are_written(diagnosed):
    for name in ("khat.png", "forest_interests.png", "mixture_weights.png", "predictive_rank.png"):
        path = diagnosed.files[name]
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    report = diagnosed.files["report.md"].read_text()
    for heading in (
        "## Summary",
        "## PSIS k-hat",
        "## Mixture components",
        "## Calibration",
        "## Seeds",
    ):
        assert heading in report
    median = diagnosed.summary["psis"]["khat_quantiles"]["median"]
    assert f"{median:.3g}" in report
    assert np.isfinite(diagnosed.summary["psis"]["loglik_psis"])
    # The unannealed guide lets z collapse to the prior on this tiny data; the report says so.
    assert ("Posterior collapse: **yes**" in report) == diagnosed.mixture.posterior_collapse


def test_psis_flags_a_planted_bad_guide(diagnosed, model_dir, tmp_path):
    rec = SigmaRecommender.load(model_dir)
    encode = rec.module.encode

    def overconfident(items):
        loc, scale = encode(items)
        return loc, scale / 10

    rec.module.encode = overconfident
    bad = diagnose(rec, tmp_path, num_users=USERS, num_samples=SAMPLES, seed=0)
    good_k = diagnosed.psis.khat
    bad_k = bad.psis.khat
    assert np.median(bad_k) > np.median(good_k) + 0.5, (np.median(good_k), np.median(bad_k))
    assert np.mean(bad_k > 0.7) >= 0.9
    assert np.mean(bad_k > 0.7) > np.mean(good_k > 0.7)
    assert "PSIS: **Unhealthy.**" in bad.files["report.md"].read_text()


def test_seed_models_become_chains(model_dir, tmp_path):
    # The same weights twice: two chains that must agree.
    result = diagnose(
        model_dir, tmp_path, num_users=10, num_samples=100, seed=1, extra_models=[model_dir]
    )
    assert result.inference_data.posterior.sizes["chain"] == 2
    assert result.inference_data.user_diagnostics["khat"].shape == (2, 10)
    runs = az.from_netcdf(result.files["runs.nc"])
    assert runs.posterior["heldout_loglik"].shape == (2, 100)
    table = result.runs_table
    assert {"heldout_loglik", "effective_components"} <= set(table.index)
    assert (table["r_hat"] < 1.1).all(), table
    assert "## Seeds" in result.files["report.md"].read_text()


def test_non_mixture_prior_skips_mixture_outputs(normal_model_dir, tmp_path):
    result = diagnose(normal_model_dir, tmp_path, num_users=10, num_samples=25)
    assert "interests" not in result.inference_data.posterior
    assert not (tmp_path / "forest_interests.png").exists()
    assert (tmp_path / "khat.png").is_file()
    assert "not applicable" in result.files["report.md"].read_text()


def test_draws_are_seeded_and_leave_the_global_rng_alone(model_dir):
    rec = SigmaRecommender.load(model_dir)
    rec.load_data()
    split = rec.split
    sequences = [
        np.append(h, t) for h, t in zip(split.test_history[:5], split.test_target[:5], strict=True)
    ]
    state = torch.get_rng_state()
    first = draw_posterior(rec.module, sequences, 25, seed=3, ks=KS)
    assert torch.equal(state, torch.get_rng_state())
    again = draw_posterior(rec.module, sequences, 25, seed=3, ks=KS)
    np.testing.assert_array_equal(first.z, again.z)
    np.testing.assert_array_equal(first.log_weight, again.log_weight)


def test_calibration_on_a_predictive_calibrated_by_construction():
    generator = torch.Generator().manual_seed(0)
    users, items = 4000, 50
    # Dirichlet.sample takes no generator: a seeded, forked global RNG keeps the test
    # independent of the tests that ran before it.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        probs = torch.distributions.Dirichlet(torch.full((items,), 0.3)).sample((users,))
    targets = torch.multinomial(probs, 1, generator=generator).squeeze(1) + 1
    no_history = torch.zeros(users, 1, dtype=torch.long)
    noise = torch.rand(users, generator=generator)

    calibrated = summarise(score_users(probs.log(), targets, no_history, KS, True, noise))
    assert all(r["verdict"] == "consistent" for r in calibrated["hit_rates"]), calibrated
    assert calibrated["pit_ks_pvalue"] > 0.01

    sharpened = torch.log_softmax(3 * probs.log(), dim=-1)
    overconfident = summarise(score_users(sharpened, targets, no_history, KS, True, noise))
    assert overconfident["hit_rates"][0]["verdict"] == "overconfident"
    assert overconfident["pit_mean"] > 0.55


def test_cli_writes_the_outputs(model_dir, tmp_path):
    out = tmp_path / "cli"
    code, stdout, stderr = run_main(
        [
            "diagnose",
            "--model",
            model_dir,
            "--out",
            out,
            "--users",
            "8",
            "--samples",
            "25",
            "--seed",
            "2",
        ]
    )
    assert code == 0, stderr
    assert stdout.strip() == str(out / "report.md")
    for name in ("diagnostics.nc", "runs.nc", "khat.png", "predictive_rank.png", "report.md"):
        assert (out / name).is_file(), name


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--users", "0"], "--users"),
        (["--samples", "5"], "--samples"),
        (["--seeds-models", "NORMAL"], "prior"),
    ],
)
def test_cli_bad_input_is_one_line_with_status_2(
    model_dir, normal_model_dir, tmp_path, extra, needle
):
    extra = [str(normal_model_dir) if a == "NORMAL" else a for a in extra]
    code, _, stderr = run_main(["diagnose", "--model", model_dir, "--out", tmp_path, *extra])
    _assert_one_line_error(code, stderr, needle)


def test_cli_missing_model_folder(tmp_path):
    code, _, stderr = run_main(["diagnose", "--model", tmp_path / "missing", "--out", tmp_path])
    _assert_one_line_error(code, stderr, "model.json")


def _assert_one_line_error(code: int, stderr: str, needle: str) -> None:
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sigma-pyro: error: "), stderr
    assert needle in lines[0], lines[0]


def test_cli_refuses_the_deterministic_variant(tmp_path):
    model = tmp_path / "deterministic"
    code, _, err = run_main(
        ["train", *TINY, "--prior", "deterministic", "--epochs", "1", "--out", model]
    )
    assert code == 0, err
    code, _, stderr = run_main(["diagnose", "--model", model, "--out", tmp_path / "diag"])
    _assert_one_line_error(code, stderr, "deterministic")
    assert not (tmp_path / "diag").exists()
