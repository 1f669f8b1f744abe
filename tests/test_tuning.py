"""Validation-only tuning (``sigma-pyro tune``): sweep parsing, the settings it trains, that
the test split is never scored, resumption, the report, and its place in docs/results.md."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sigma_pyro.api as api
import sigma_pyro.experiments.tuning as tuning
import sigma_pyro.inference.training as training
from sigma_pyro.cli.main import main
from sigma_pyro.config import load_config
from sigma_pyro.errors import ConfigError
from sigma_pyro.experiments.tuning import (
    BASELINE,
    TUNING_METRICS,
    best_setting,
    parse_sweep,
    run_tuning,
    tuning_settings,
)

REPO = Path(__file__).resolve().parents[1]
# Neither hidden_size nor num_interests: the tests sweep them.
TINY = {
    "synthetic_users": 120,
    "synthetic_items": 50,
    "synthetic_categories": 4,
    "num_heads": 2,
    "max_seq_length": 10,
    "batch_size": 64,
    "epochs": 1,
}
SMALL = {**TINY, "hidden_size": 16}
TINY_FLAGS = [
    word for name, value in TINY.items() for word in ("--" + name.replace("_", "-"), str(value))
] + ["--no-progress"]
SMALL_FLAGS = [*TINY_FLAGS, "--hidden-size", "16"]


def test_a_sweep_reads_each_value_as_the_settings_type():
    assert parse_sweep("num_interests=2,8") == ("num_interests", [2, 8])
    assert parse_sweep("--kl-cap=0.1, 0.5") == ("kl_cap", [0.1, 0.5])
    assert parse_sweep("train_prototypes=false") == ("train_prototypes", [False])
    assert parse_sweep("prior=normal,sigma") == ("prior", ["normal", "sigma"])


@pytest.mark.parametrize(
    "spec, message",
    [
        ("num_interests", "expected NAME=VALUE"),
        ("num_interests=", "expected NAME=VALUE"),
        ("num_intrests=2", "unknown setting 'num_intrests'"),
        ("seed=1,2", "seed is not a model or training setting"),
        ("path=a.txt", "path is not a model or training setting"),
        ("num_interests=two", "cannot read 'two' as int"),
        ("kl_cap=0.1,0.1", "a value is given twice"),
    ],
)
def test_a_bad_sweep_is_a_one_line_error_naming_it(tmp_path, capsys, spec, message):
    assert main(["tune", "--out", str(tmp_path / "t"), "--sweep", spec, *SMALL_FLAGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--sweep {spec}" in err and message in err
    assert not (tmp_path / "t").exists()


def test_an_impossible_swept_value_fails_before_anything_trains(tmp_path, capsys):
    assert (
        main(["tune", "--out", str(tmp_path / "t"), "--sweep", "hidden_size=15", *TINY_FLAGS]) == 2
    )
    err = capsys.readouterr().err
    assert "--sweep hidden_size=15" in err and err.count("\n") == 1
    assert not (tmp_path / "t" / "tuning.csv").exists()


def test_settings_are_the_preset_then_each_value_that_differs_from_it():
    base = load_config("office")
    settings = tuning_settings(base, [("num_interests", [2, 4, 8]), ("kl_cap", [0.5])])
    assert settings == {
        BASELINE: {},
        "num_interests=2": {"num_interests": 2},
        "num_interests=8": {"num_interests": 8},
        "kl_cap=0.5": {"kl_cap": 0.5},
    }
    with pytest.raises(ConfigError, match="swept twice"):
        tuning_settings(base, [("kl_cap", [0.1]), ("kl_cap", [0.5])])


def test_a_swept_setting_may_not_also_be_fixed(tmp_path):
    with pytest.raises(ConfigError, match="also fixed by --kl-cap"):
        run_tuning(
            tmp_path, [("kl_cap", [0.5])], overrides={**SMALL, "kl_cap": 0.1}, progress=False
        )


@pytest.fixture
def scored_targets(monkeypatch):
    """Every target array any ranking evaluation was asked to score."""
    seen = []

    def spy(original):
        def recorded(module, histories, targets, *args, **kwargs):
            seen.append(np.asarray(targets))
            return original(module, histories, targets, *args, **kwargs)

        return recorded

    monkeypatch.setattr(training, "evaluate_module", spy(training.evaluate_module))
    monkeypatch.setattr(api, "evaluate_module", spy(api.evaluate_module))
    return seen


def test_tuning_trains_each_setting_and_never_scores_the_test_split(tmp_path, scored_targets):
    table = run_tuning(
        tmp_path,
        [("num_interests", [2]), ("hidden_dropout", [0.1])],
        overrides=SMALL,
        progress=False,
        log=lambda line: None,
    )
    assert table["setting"].tolist() == [BASELINE, "num_interests=2", "hidden_dropout=0.1"]
    assert (table["status"] == "ok").all()
    assert not any(c.startswith(("recall", "ndcg", "mrr")) for c in table.columns)
    rec = api.SigmaRecommender.from_preset("synthetic", **SMALL)
    split = rec.split
    assert scored_targets and all(np.array_equal(t, split.valid_target) for t in scored_targets)
    assert not any(np.array_equal(t, split.test_target) for t in scored_targets)
    # Each setting really trained with its value, and the row holds its best validation.
    saved = api.SigmaRecommender.load(tmp_path / "runs" / "num_interests=2")
    assert saved.config.model.num_interests == 2
    meta = pd.read_json(tmp_path / "runs" / "num_interests=2" / "model.json", typ="series")
    row = table.set_index("setting").loc["num_interests=2"]
    assert row["valid_ndcg@10"] == pytest.approx(meta["valid"]["ndcg@10"])
    report = (tmp_path / "tuning.md").read_text()
    assert "--sweep num_interests=2 --sweep hidden_dropout=0.1" in report
    assert f"Best validation ndcg@10: `{best_setting(table)}`" in report


def test_rerunning_the_same_tuning_resumes_it(tmp_path, monkeypatch):
    calls = []
    original = tuning.train_and_validate

    def counted(config, run_dir, log):
        calls.append(run_dir.name)
        return original(config, run_dir, log)

    monkeypatch.setattr(tuning, "train_and_validate", counted)
    run_tuning(
        tmp_path, [("num_interests", [2])], overrides=SMALL, progress=False, log=lambda line: None
    )
    assert calls == [BASELINE, "num_interests=2"]
    run_tuning(
        tmp_path,
        [("num_interests", [2, 8])],
        overrides=SMALL,
        progress=False,
        log=lambda line: None,
    )
    assert calls == [BASELINE, "num_interests=2", "num_interests=8"]
    assert len(pd.read_csv(tmp_path / "tuning.csv")) == 3


def test_parallel_jobs_train_every_setting_like_one_job(tmp_path):
    sweeps = [("num_interests", [2]), ("kl_cap", [0.5])]
    one = run_tuning(
        tmp_path / "one", sweeps, overrides=SMALL, progress=False, log=lambda line: None
    )
    two = run_tuning(
        tmp_path / "two", sweeps, overrides=SMALL, progress=False, log=lambda line: None, jobs=2
    )
    assert sorted(two["setting"]) == sorted(one["setting"]) and (two["status"] == "ok").all()
    # Same seeds and settings; only the thread count differs, which may reorder float sums.
    merged = one.merge(two, on="setting", suffixes=("_one", "_two"))
    for metric in TUNING_METRICS:
        assert np.allclose(merged[metric + "_one"], merged[metric + "_two"], atol=1e-3), metric
    assert (tmp_path / "two" / "runs" / "kl_cap=0.5" / "model.pt").is_file()
    with pytest.raises(ConfigError, match="--jobs must be at least 1"):
        run_tuning(tmp_path / "three", sweeps, overrides=SMALL, jobs=0)


def _tuning_rows(values: dict[str, float]) -> pd.DataFrame:
    rows = [
        {
            "setting": s,
            "status": "ok",
            **{m: v for m in TUNING_METRICS},
            "best_epoch": 3,
            "epochs": 8,
            "stopped_early": True,
            "wall_seconds": 60.0,
            "criterion": "ndcg@20",
            "code": "abc",
            "command": "sigma-pyro tune --sweep kl_cap=0.5",
        }
        for s, v in values.items()
    ]
    return pd.DataFrame(rows)


def test_the_best_setting_is_the_highest_validation_criterion_and_the_preset_wins_ties():
    assert best_setting(_tuning_rows({BASELINE: 0.1, "kl_cap=0.5": 0.2})) == "kl_cap=0.5"
    assert best_setting(_tuning_rows({"kl_cap=0.5": 0.2, BASELINE: 0.2})) == BASELINE
    failed = _tuning_rows({BASELINE: 0.1}).assign(status="failed: diverged")
    assert best_setting(failed) is None
    report = tuning.render_tuning(failed)
    assert "No finished tuning runs." in report and "`preset` (failed: diverged)" in report


def _results_csv(path: Path) -> Path:
    from sigma_pyro.experiments.compare import COLUMNS, METRICS

    rows = [
        {
            "prior": p,
            "seed": s,
            "status": "ok",
            **{m: 0.1 + 0.01 * s for m in METRICS},
            "epochs": 10,
            "best_epoch": 5,
            "stopped_early": True,
            "wall_seconds": 10.0,
            "run_dir": "r",
            "code": "abc",
        }
        for p in ("sigma", "normal")
        for s in (0, 1)
    ]
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(path, index=False)
    return path


def test_results_show_the_settings_tried_under_their_dataset(tmp_path):
    runs = _results_csv(tmp_path / "Beauty.csv")
    (tmp_path / "tuning").mkdir()
    tuned = tmp_path / "tuning" / "Beauty.csv"
    _tuning_rows({BASELINE: 0.05, "kl_cap=0.5": 0.06}).to_csv(tuned, index=False)
    out = tmp_path / "results.md"
    assert main(["results", "--runs", str(runs), "--tuning", str(tuned), "--out", str(out)]) == 0
    text = out.read_text()
    section = text[text.index("## Beauty") :]
    assert "### Settings tried on validation" in section
    assert "Best validation ndcg@20: `kl_cap=0.5`" in section
    assert "| `kl_cap=0.5` | 0.0600" in section and "+0.0100" in section
    assert f"--tuning {tuned}" in text


def test_tuning_of_a_dataset_without_results_is_refused(tmp_path, capsys):
    runs = _results_csv(tmp_path / "Beauty.csv")
    tuned = tmp_path / "Toys.csv"
    _tuning_rows({BASELINE: 0.05}).to_csv(tuned, index=False)
    assert (
        main(
            [
                "results",
                "--runs",
                str(runs),
                "--tuning",
                str(tuned),
                "--out",
                str(tmp_path / "o.md"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--tuning Toys: no results file" in err and err.count("\n") == 1
    tuned.write_text("setting,status\npreset,ok\n")
    assert (
        main(
            [
                "results",
                "--runs",
                str(runs),
                "--tuning",
                str(tuned),
                "--out",
                str(tmp_path / "o.md"),
            ]
        )
        == 2
    )
    assert "missing column(s) criterion" in capsys.readouterr().err
    assert not (tmp_path / "o.md").exists()


def test_the_script_is_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["tune.py", "--out", str(tmp_path), "--sweep", "nope=1"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(REPO / "scripts" / "tune.py"), run_name="__main__")
    assert exit_.value.code == 2 and "unknown setting 'nope'" in capsys.readouterr().err
