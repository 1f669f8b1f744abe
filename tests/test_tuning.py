"""Validation-only tuning (``sigma-pyro tune``): the search space and its errors, the Optuna
study (resumed, extended, retried after a dead process or Ctrl-C, pruned, on a grid, in two
workers), that the test split is never scored, the reports, and their place in
docs/results.md."""

from __future__ import annotations

import runpy
import sys
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

import sigma_pyro.api as api
import sigma_pyro.experiments.study as tuning_study
import sigma_pyro.experiments.tuning as tuning
import sigma_pyro.experiments.tuning_report as tuning_report
import sigma_pyro.inference.training as training
from sigma_pyro.cli.main import main
from sigma_pyro.config import load_config, nest_overrides
from sigma_pyro.errors import ConfigError, TrainingError
from sigma_pyro.experiments.compare import METRICS
from sigma_pyro.experiments.search_space import describe, load_space
from sigma_pyro.experiments.tuning import run_tuning
from sigma_pyro.experiments.tuning_report import TUNING_METRICS
from sigma_pyro.inference.training import EpochRecord

REPO = Path(__file__).resolve().parents[1]
# Neither num_interests nor hidden_dropout: the spaces below tune them.
TINY = {
    "synthetic_users": 120,
    "synthetic_items": 50,
    "synthetic_categories": 4,
    "num_heads": 2,
    "hidden_size": 16,
    "max_seq_length": 10,
    "batch_size": 64,
    "epochs": 1,
    "progress": False,
}
TINY_FLAGS = [
    word
    for name, value in TINY.items()
    if name != "progress"
    for word in ("--" + name.replace("_", "-"), str(value))
] + ["--no-progress"]
SPACE = """\
num_interests: {type: categorical, choices: [2, 4]}
hidden_dropout: {type: float, low: 0.1, high: 0.5}
"""
GRID = """\
num_interests: {type: categorical, choices: [2, 4]}
prior: {type: categorical, choices: [sigma, normal]}
"""


def quiet(line: str) -> None:
    pass


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def space(tmp_path) -> Path:
    return write(tmp_path / "space.yaml", SPACE)


def tune(out: Path, space: Path, trials: int, **options) -> pd.DataFrame:
    overrides = {**TINY, **options.pop("overrides", {})}
    return run_tuning(out, space, trials, overrides=overrides, log=quiet, **options)


def fake_training(monkeypatch, score=lambda config: 0.1 * config.model.num_interests):
    """Replace training by one epoch whose every validation metric is ``score(config)``;
    returns the configurations trained."""
    trained = []

    def train(config, on_epoch, log, folder):
        trained.append(config)
        valid = {m: score(config) for m in METRICS}
        on_epoch(EpochRecord(1, 1, 0.0, {}, valid, 0.0, 0.0, 0.0))

    monkeypatch.setattr(tuning_study, "train_trial", train)
    return trained


def stored_trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{out / tuning.STUDY_FILE}"
    return optuna.load_study(study_name=out.name, storage=storage).trials


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


def test_a_study_trains_its_trials_and_never_scores_the_test_split(tmp_path, space, scored_targets):
    out = tmp_path / "study"
    table = tune(out, space, 2, overrides={"epochs": 2})
    assert table["number"].tolist() == [0, 1] and (table["state"] == "complete").all()
    split = api.SigmaRecommender.from_preset("synthetic", **TINY).split
    assert scored_targets and all(np.array_equal(t, split.valid_target) for t in scored_targets)
    assert not any(np.array_equal(t, split.test_target) for t in scored_targets)

    csv = pd.read_csv(out / "tuning.csv")
    assert {
        "param_num_interests",
        "param_hidden_dropout",
        *TUNING_METRICS,
        "best_epoch",
        "epochs",
        "wall_seconds",
        "criterion",
        "code",
        "command",
    } <= set(csv.columns)
    assert not any(c.startswith(("recall", "ndcg", "mrr", "test")) for c in csv.columns)
    # The objective is the best validation criterion over the epochs, as the row records.
    for trial, row in zip(stored_trials(out), csv.to_dict("records"), strict=True):
        assert trial.value == pytest.approx(row["valid_ndcg@10"])
        assert trial.params == {
            "num_interests": row["param_num_interests"],
            "hidden_dropout": pytest.approx(row["param_hidden_dropout"]),
        }
        assert row["epochs"] == 2 and row["best_epoch"] in (1, 2)
        assert max(trial.intermediate_values.values()) == pytest.approx(trial.value)

    report = (out / "tuning.md").read_text()
    command = f"sigma-pyro tune --space {space} --trials 2 --out {out}"
    assert command in report and command in csv["command"].iloc[0]
    best = csv.loc[csv["valid_ndcg@10"].idxmax()]
    assert f"Best validation ndcg@10: trial {best['number']}," in report
    assert "| `hidden_dropout` | reals 0.1 to 0.5 |" in report
    assert "sigma-pyro train --synthetic-users 120" in report and f"--out {out / 'best'}" in report


def test_rerunning_resumes_the_study_and_more_trials_run_only_the_difference(
    tmp_path, space, monkeypatch
):
    trained = []
    original = tuning_study.train_trial

    def counted(config, on_epoch, log, folder):
        trained.append(config)
        original(config, on_epoch, log, folder)

    monkeypatch.setattr(tuning_study, "train_trial", counted)
    out = tmp_path / "study"
    tune(out, space, 1)
    tune(out, space, 1)
    assert len(trained) == 1
    table = tune(out, space, 2)
    assert len(trained) == 2 and table["number"].tolist() == [0, 1]
    assert len(pd.read_csv(out / "tuning.csv")) == 2


def test_a_new_study_starts_with_the_preset_as_its_baseline(tmp_path, monkeypatch):
    trained = fake_training(monkeypatch)
    preset = load_config(None).model  # what these studies tune without --preset
    inside = write(
        tmp_path / "inside.yaml",
        f"num_interests: {{type: categorical, choices: [2, {preset.num_interests}]}}\n"
        "hidden_dropout: {type: float, low: 0.1, high: 0.5}\n",
    )
    out = tmp_path / "study"
    tune(out, inside, 3, sampler="random")
    first = stored_trials(out)[0]
    assert first.params == {
        "num_interests": preset.num_interests,
        "hidden_dropout": preset.hidden_dropout,
    }
    assert trained[0].model.num_interests == preset.num_interests
    assert "| 0 | complete, the preset |" in (out / "tuning.md").read_text()
    tune(out, inside, 4, sampler="random")  # a resumed study gets no second baseline
    assert [t.user_attrs.get("baseline") for t in stored_trials(out)].count("preset") == 1

    outside = write(tmp_path / "outside.yaml", "num_interests: {type: int, low: 9, high: 12}\n")
    tune(tmp_path / "other", outside, 2, sampler="random")
    assert all("baseline" not in t.user_attrs for t in stored_trials(tmp_path / "other"))


def test_a_trial_left_running_by_a_dead_process_is_retried(tmp_path, space, monkeypatch):
    monkeypatch.setattr(tuning_study, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(tuning_study, "GRACE_SECONDS", 1)
    trained = fake_training(monkeypatch)
    out = tmp_path / "study"
    out.mkdir()
    # What a killed process leaves: a RUNNING trial whose heartbeat has stopped.
    storage = tuning_study.open_storage(f"sqlite:///{out / tuning.STUDY_FILE}")
    study = optuna.create_study(storage=storage, study_name=out.name, direction="maximize")
    with pytest.warns(UserWarning, match="Heartbeat"):  # it is meant for Study.optimize
        stuck = study.ask(load_space(space, "synthetic", TINY))
    storage.record_heartbeat(stuck._trial_id)
    time.sleep(2.5)
    table = tune(out, space, 1).set_index("number")
    assert table.loc[stuck.number, "state"] == "failed"
    retry = table[table["retry_of"] == stuck.number]
    assert len(retry) == 1 and retry["state"].iloc[0] == "complete"
    assert [c.model.num_interests for c in trained] == [stuck.params["num_interests"]]
    assert retry["param_hidden_dropout"].iloc[0] == stuck.params["hidden_dropout"]
    assert (
        f"| {retry.index[0]} | complete (retry of {stuck.number}) |"
        in (out / "tuning.md").read_text()
    )


def failed_chain(study: optuna.Study, epochs_reached: list[int]) -> optuna.trial.FrozenTrial:
    """A trial and its retries, each failed after reaching the given epoch; the last."""
    distribution = optuna.distributions.FloatDistribution(0.1, 0.5)
    history: list[int] = []
    for reached in epochs_reached:
        study.add_trial(
            optuna.create_trial(
                state=optuna.trial.TrialState.FAIL,
                params={"hidden_dropout": 0.3},
                distributions={"hidden_dropout": distribution},
                intermediate_values={e: 0.01 * e for e in range(1, reached + 1)},
                system_attrs={"failed_trial": history[0], "retry_history": list(history)}
                if history
                else {},
            )
        )
        history.append(study.trials[-1].number)
    return study.trials[-1]


def waiting(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(optuna.trial.TrialState.WAITING,))


def test_a_failed_trial_is_queued_once_however_many_workers_fail_it(tmp_path):
    # Two workers that both failed one stale trial (the SQLite race) both call back.
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=tuning_study.open_storage(url), study_name="s")
    failed = failed_chain(study, [4])
    retry = tuning_study.RetryOnce(tuning_study._lock_beside(url))
    retry(study, failed)
    retry(study, failed)
    (queued,) = waiting(study)
    assert queued.system_attrs["retry_history"] == [failed.number]
    assert queued.params == failed.params and (tmp_path / "study.db.lock").exists()


def test_two_workers_asking_together_never_claim_one_queued_trial(tmp_path, monkeypatch):
    # SQLite has no SELECT ... FOR UPDATE: each worker reads the queued trial as WAITING
    # and then writes RUNNING. Hold both between the read and the write.
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=tuning_study.open_storage(url), study_name="s")
    study.enqueue_trial({"x": 1.0})
    (queued,) = waiting(study)
    readable = optuna.storages.RDBStorage.check_trial_is_updatable
    monkeypatch.setattr(
        optuna.storages.RDBStorage,
        "check_trial_is_updatable",
        lambda self, *args: (time.sleep(0.5), readable(self, *args))[1],
    )
    claims = []
    workers = [
        threading.Thread(
            target=lambda: claims.append(
                tuning_study.open_storage(url).set_trial_state_values(
                    queued._trial_id, optuna.trial.TrialState.RUNNING
                )
            )
        )
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(claims) == [False, True]


@pytest.mark.parametrize(
    ("epochs_reached", "retried"),
    [
        ([3, 7, 12, 20], True),  # resumed and cut short at each session's end: moving on
        ([0, 0], True),
        ([0, 0, 0], False),  # killed before its first epoch three times
        ([5, 5, 5, 5], False),  # out of memory at the same epoch: three retries in a row
        ([5, 5, 5, 6], True),
    ],
)
def test_a_chain_of_retries_is_given_up_only_when_it_stops_moving_on(epochs_reached, retried):
    study = optuna.create_study()
    tuning_study.RetryOnce(None)(study, failed_chain(study, epochs_reached))
    assert len(waiting(study)) == int(retried)


def test_an_interrupted_trial_is_retried_by_the_next_run(tmp_path, space, monkeypatch):
    def interrupted(config, on_epoch, log, folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(tuning_study, "train_trial", interrupted)
    out = tmp_path / "study"
    with pytest.raises(KeyboardInterrupt):
        tune(out, space, 1)
    first = pd.read_csv(out / "tuning.csv")
    assert first["state"].tolist() == ["failed", "waiting"]
    assert first["error"].iloc[0] == "interrupted"
    fake_training(monkeypatch)
    table = tune(out, space, 1)
    assert table["state"].tolist() == ["failed", "complete"] and table["retry_of"][1] == 0
    assert table["param_hidden_dropout"][1] == first["param_hidden_dropout"][0]


def test_a_pruned_trial_counts_as_finished_and_is_listed(tmp_path, space, monkeypatch):
    # Every validation metric is below 1, so this pruner stops each trial at its first epoch.
    monkeypatch.setitem(
        tuning_study.PRUNERS, "median", lambda: optuna.pruners.ThresholdPruner(lower=1.0)
    )
    out = tmp_path / "study"
    table = tune(out, space, 1, overrides={"epochs": 3})
    row = table.iloc[0]
    assert row["state"] == "pruned" and row["epochs"] == 1 and row["best_epoch"] == 1
    assert 0 < row["valid_ndcg@10"] < 1
    assert "| 0 | pruned, the preset |" in (out / "tuning.md").read_text()
    assert len(tune(out, space, 1)) == 1


def test_a_retried_trial_resumes_its_training_where_the_interrupted_one_stopped(
    tmp_path, space, monkeypatch
):
    # Ctrl-C during epoch 2's report: the state on disk is epoch 1's. The retry trains
    # epochs 2 and 3 only, and its curve is the uninterrupted trial's, epoch for epoch.
    overrides = {"epochs": 3, "patience": 5}
    tune(tmp_path / "whole", space, 1, overrides=overrides)
    (whole,) = stored_trials(tmp_path / "whole")
    original, trained, lines = tuning_study.train_trial, [], []

    def interrupted_at_epoch_2(config, on_epoch, log, folder):
        def report(record):
            if record.epoch == 2:
                raise KeyboardInterrupt
            on_epoch(record)

        original(config, report, log, folder)

    monkeypatch.setattr(tuning_study, "train_trial", interrupted_at_epoch_2)
    out = tmp_path / "study"
    with pytest.raises(KeyboardInterrupt):
        tune(out, space, 1, overrides=overrides)
    assert (out / tuning_study.TRIALS_DIR / "0" / "last.pt").is_file()

    def counted(config, on_epoch, log, folder):
        original(
            config, lambda record: (trained.append(record.epoch), on_epoch(record)), log, folder
        )

    monkeypatch.setattr(tuning_study, "train_trial", counted)
    run_tuning(out, space, 1, overrides={**TINY, **overrides}, log=lines.append)
    retry = next(t for t in stored_trials(out) if t.state == optuna.trial.TrialState.COMPLETE)
    assert trained == [2, 3] and any("resumed from" in line for line in lines)
    assert retry.intermediate_values == whole.intermediate_values
    assert retry.value == whole.value and retry.params == whole.params
    assert not (out / tuning_study.TRIALS_DIR / "0").exists()


def test_failed_trials_are_recorded_and_a_study_that_only_fails_stops(tmp_path, space, monkeypatch):
    def diverged(config, on_epoch, log, folder):
        raise TrainingError("non-finite ELBO at epoch 1, step 3")

    monkeypatch.setattr(tuning_study, "train_trial", diverged)
    out = tmp_path / "study"
    table = tune(out, space, 5)
    assert table["state"].tolist() == ["failed"] * tuning_study.FAILURES_IN_A_ROW
    assert (table["error"] == "non-finite ELBO at epoch 1, step 3").all()
    report = (out / "tuning.md").read_text()
    assert "No complete trials." in report and "trial 0 (non-finite ELBO" in report


def test_the_grid_sampler_tries_every_combination_once(tmp_path, monkeypatch):
    trained = fake_training(monkeypatch)
    grid = write(tmp_path / "grid.yaml", GRID)
    out = tmp_path / "study"
    table = tune(out, grid, 10, sampler="grid")
    tried = {(c.model.num_interests, c.model.prior) for c in trained}
    assert len(trained) == 4 and tried == {(2, "sigma"), (4, "sigma"), (2, "normal"), (4, "normal")}
    assert len(table) == 4 and (table["state"] == "complete").all()
    tune(out, grid, 10, sampler="grid")
    assert len(trained) == 4


def test_two_workers_share_the_study(tmp_path, space):
    out = tmp_path / "study"
    table = tune(out, space, 2, jobs=2)
    assert sorted(table["number"]) == [0, 1] and (table["state"] == "complete").all()
    assert table["param_hidden_dropout"].nunique() == 2
    with pytest.raises(ConfigError, match="--jobs must be at least 1"):
        tune(tmp_path / "other", space, 2, jobs=0)


def study_plan(out: Path, space: Path, trials: int):
    return tuning._plan(
        out,
        str(space),
        trials,
        None,
        TINY,
        timeout=None,
        storage=None,
        study_name=None,
        sampler="tpe",
        pruner="median",
        jobs=2,
    )


def test_a_late_worker_finds_the_study_complete_and_runs_nothing(tmp_path, space, monkeypatch):
    # The race that overshot --trials: worker 0 finishes both trials before worker 1's
    # process has started one. Worker 1 must then not start a third.
    trained = fake_training(monkeypatch)
    out = tmp_path / "study"
    tune(out, space, 2)
    plan = study_plan(out, space, 2)
    tuning_study.optimize(plan, worker=1, existing=2, log=quiet)
    assert len(trained) == 2 and len(stored_trials(out)) == 2


def test_a_trial_asked_beyond_the_total_stands_down_and_is_not_reported(
    tmp_path, space, monkeypatch
):
    # Two workers that both saw one trial missing both ask: the later trial number yields.
    trained = fake_training(monkeypatch)
    out = tmp_path / "study"
    tune(out, space, 2)
    plan = study_plan(out, space, 2)
    study = tuning_study.open_study(plan)
    study.optimize(lambda trial: tuning_study.objective(trial, plan, quiet), n_trials=1)
    (surplus,) = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert surplus.number == 2 and surplus.user_attrs["surplus"] and len(trained) == 2
    table = tuning_report.write_reports(plan, study)
    assert sorted(table["number"]) == [0, 1]
    assert "| 2 |" not in (out / tuning_report.REPORT).read_text(encoding="utf-8")
    # and the study, resumed for more trials, runs them as usual
    assert len(tune(out, space, 3)) == 3 and len(trained) == 3


def test_a_resumed_study_must_rank_by_the_same_metric(tmp_path, space, monkeypatch):
    fake_training(monkeypatch)
    out = tmp_path / "study"
    tune(out, space, 1)
    with pytest.raises(ConfigError, match="ranks by ndcg@10"):
        tune(out, space, 2, overrides={"early_stop_metric": "mrr"})


@pytest.mark.parametrize(
    "text, key, message",
    [
        ("nope: {type: int, low: 1, high: 2}", "nope", "unknown setting"),
        ("seed: {type: int, low: 0, high: 3}", "seed", "not a model or training setting"),
        (
            "hidden_size: {type: categorical, choices: [16, 32]}",
            "hidden_size",
            "also fixed by --hidden-size",
        ),
        ("num_layers: {type: int, low: 3, high: 1}", "num_layers", "low (3) must be below"),
        ("lr: {type: float, low: 1e-4, high: 0.01}", "lr", "write 1e-4 as 1.0e-4"),
        ("num_layers: {type: float, low: 1.0, high: 3.0}", "num_layers", "use type: int"),
        ("num_layers: {type: int, low: 1.5, high: 3}", "num_layers", "must be an integer"),
        ("num_layers: {type: int, low: 1, high: 4, step: 2}", "num_layers", "multiple of step"),
        ("num_layers: {type: int, low: 1, high: 3, stepp: 1}", "num_layers", "unknown key(s)"),
        ("lr: {type: float, low: 0.0, high: 0.1, log: true}", "lr", "needs low > 0"),
        ("lr: {type: float, low: 0.001, high: 0.1, log: yes please}", "lr", "log must be"),
        (
            "hidden_dropout: {type: float, low: 0.1, high: 1.5}",
            "hidden_dropout",
            "1.5 is rejected: --hidden-dropout must be in [0, 1)",
        ),
        (
            "num_interests: {type: categorical, choices: [2, two]}",
            "num_interests",
            "cannot read 'two' as int",
        ),
        ("num_interests: {type: categorical, choices: [2, 2.0]}", "num_interests", "given twice"),
        ("num_interests: {type: categorical, choices: [2]}", "num_interests", "at least two"),
        ("num_layers: [1, 2]", "num_layers", "expected {type: float|int|categorical"),
        ("ks: {type: categorical, choices: [5, 10]}", "ks", "not a model or training"),
    ],
)
def test_a_bad_space_is_a_one_line_error_naming_the_file_and_key(
    tmp_path, capsys, text, key, message
):
    path = write(tmp_path / "bad.yaml", text + "\n")
    out = tmp_path / "study"
    argv = ["tune", "--space", str(path), "--trials", "2", "--out", str(out), *TINY_FLAGS]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: {key}: " in err and message in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "expected a mapping of settings"),
        ("- lr\n", "expected a mapping of settings"),
        ("lr: {type: float, low: 1.0e-4\n", ":2: not valid YAML"),
    ],
)
def test_a_space_that_is_no_mapping_is_a_one_line_error(tmp_path, capsys, text, message):
    path = write(tmp_path / "bad.yaml", text)
    argv = ["tune", "--space", str(path), "--trials", "1", "--out", str(tmp_path / "o")]
    assert main([*argv, *TINY_FLAGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and message in err, err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--sampler", "grid"], "--sampler grid: hidden_dropout is a range"),
        (["--sampler", "cmaes"], "--sampler 'cmaes' is unknown"),
        (["--pruner", "hyperband"], "--pruner 'hyperband' is unknown"),
        (["--trials", "0"], "--trials must be at least 1"),
        (["--timeout", "0"], "--timeout must be positive"),
        (["--early-stop-metric", "ndcg@5"], "tuning ranks by one of"),
    ],
)
def test_bad_study_flags_are_one_line_errors(tmp_path, space, capsys, flags, message):
    out = tmp_path / "study"
    argv = ["tune", "--space", str(space), "--trials", "1", "--out", str(out), *TINY_FLAGS]
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_the_shipped_spaces_load_against_every_preset():
    for name in ("shared-network", "kl", "sigma"):
        for preset in ("synthetic", "beauty", "toys", "office"):
            assert load_space(name, preset)
    assert describe(load_space("kl")["kl_cap"]) == "reals 0.0001 to 1, log-uniform"


def test_the_best_trial_is_written_as_a_preset_with_each_value_commented(
    tmp_path, space, monkeypatch
):
    fake_training(monkeypatch, score=lambda c: c.model.num_interests - c.model.hidden_dropout)
    (tmp_path / "presets").mkdir()
    preset = write(tmp_path / "presets" / "mine.yaml", "base: synthetic\nmodel: {hidden_size: 8}\n")
    out = tmp_path / "studies" / "study"
    tune(out, space, 4, sampler="random", preset=str(preset), overrides={"hidden_size": 16})
    best = max(stored_trials(out), key=lambda t: t.value)
    text = (out / "best.yaml").read_text(encoding="utf-8")
    assert f"trial {best.number} of the study study:" in text
    assert text.count(f"# trial {best.number} of the study study") == 2  # one per tuned value
    assert "The study fixed, and its trials were trained with: --synthetic-users 120" in text
    assert "base: ../../presets/mine.yaml" in text
    # The file trains what the best trial trained, given the flags the study fixed.
    tuned = load_config(str(out / "best.yaml"), nest_overrides(TINY)).model
    assert tuned.num_interests == best.params["num_interests"]
    assert tuned.hidden_dropout == best.params["hidden_dropout"]
    assert f"`{out / 'best.yaml'}`" in (out / "tuning.md").read_text(encoding="utf-8")


def test_spaces_given_together_search_as_one_and_resume_as_given(tmp_path, monkeypatch, capsys):
    fake_training(monkeypatch)
    out = tmp_path / "study"
    own = write(tmp_path / "own.yaml", "num_interests: {type: categorical, choices: [2, 4]}\n")
    argv = ["tune", "--space", "kl", "--space", str(own), "--trials", "2", "--out", str(out)]
    assert main([*argv, *TINY_FLAGS]) == 0
    table = pd.read_csv(out / "tuning.csv")
    assert {"param_kl_cap", "param_kl_free_bits", "param_num_interests"} <= set(table.columns)
    report = (out / "tuning.md").read_text(encoding="utf-8")
    assert f"--space kl --space {own}" in report
    assert f"`kl` and `{own}`:" in report


def test_a_setting_in_two_spaces_is_a_one_line_error(tmp_path, capsys):
    twice = write(tmp_path / "twice.yaml", "kl_cap: {type: float, low: 0.01, high: 0.1}\n")
    out = tmp_path / "study"
    argv = ["tune", "--space", "kl", "--space", str(twice), "--trials", "1", "--out", str(out)]
    assert main([*argv, *TINY_FLAGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{twice}: kl_cap: also searched by" in err, err
    assert not out.exists()


def test_the_command_prints_the_report(tmp_path, space, monkeypatch, capsys):
    fake_training(monkeypatch)
    out = tmp_path / "study"
    argv = ["tune", "--space", str(space), "--trials", "1", "--out", str(out), *TINY_FLAGS]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("# Tuning on validation")
    assert (out / "study.db").is_file()


def _tuning_rows(values: dict[str, float]) -> pd.DataFrame:
    """A tuning.csv of complete trials, each tuning kl_cap to the key (``preset``: none)."""
    rows = [
        {
            "number": n,
            "state": "complete",
            "param_kl_cap": None if setting == "preset" else float(setting),
            **{m: value for m in TUNING_METRICS},
            "best_epoch": 3,
            "epochs": 8,
            "wall_seconds": 60.0,
            "criterion": "ndcg@20",
            "retry_of": None,
            "error": None,
            "code": "abc",
            "command": "sigma-pyro tune --space kl --trials 2",
        }
        for n, (setting, value) in enumerate(values.items())
    ]
    return pd.DataFrame(rows)


def test_the_best_trial_is_the_highest_validation_criterion():
    table = _tuning_rows({"preset": 0.1, "0.5": 0.2, "0.25": 0.15})
    assert tuning_report.best_trial(table)["number"] == 1
    assert tuning_report.ranked(table)["number"].tolist() == [1, 2, 0]
    pruned = table.assign(state=["complete", "pruned", "failed"])
    assert tuning_report.ranked(pruned)["number"].tolist() == [0, 1, 2]
    assert tuning_report.best_trial(table.assign(state="failed")) is None


def _results_csv(path: Path) -> Path:
    from sigma_pyro.experiments.compare import COLUMNS

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


def test_results_show_the_trials_under_their_dataset(tmp_path):
    runs = _results_csv(tmp_path / "Beauty.csv")
    (tmp_path / "tuning").mkdir()
    tuned = tmp_path / "tuning" / "Beauty.csv"
    _tuning_rows({"preset": 0.05, "0.5": 0.06}).to_csv(tuned, index=False)
    out = tmp_path / "results.md"
    assert main(["results", "--runs", str(runs), "--tuning", str(tuned), "--out", str(out)]) == 0
    text = out.read_text()
    section = text[text.index("## Beauty") :]
    assert "### Settings tried on validation" in section
    assert "sigma-pyro tune --space kl --trials 2" in section
    assert "Best validation ndcg@20: trial 1, `kl_cap=0.5`, 0.0600 at epoch 3." in section
    assert "| 1 | complete | `kl_cap=0.5` | 0.0600 |" in section
    assert "| 0 | complete | `preset` | 0.0500 |" in section
    assert f"--tuning {tuned}" in text


def test_tuning_of_a_dataset_without_results_is_refused(tmp_path, capsys):
    runs = _results_csv(tmp_path / "Beauty.csv")
    tuned = tmp_path / "Toys.csv"
    _tuning_rows({"preset": 0.05}).to_csv(tuned, index=False)
    argv = ["results", "--runs", str(runs), "--tuning", str(tuned), "--out", str(tmp_path / "o.md")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--tuning Toys: no results file" in err and err.count("\n") == 1
    tuned.write_text("setting,status\npreset,ok\n")
    assert main(argv) == 2
    assert "missing column(s) number, state, criterion" in capsys.readouterr().err
    assert not (tmp_path / "o.md").exists()


def test_the_script_is_the_cli(tmp_path, monkeypatch, capsys):
    argv = [
        "tune.py",
        "--space",
        str(tmp_path / "nope.yaml"),
        "--trials",
        "1",
        "--out",
        str(tmp_path),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(REPO / "scripts" / "tune.py"), run_name="__main__")
    assert exit_.value.code == 2 and "nope.yaml: no such file" in capsys.readouterr().err
