"""The results table of docs/results.md: loading the runs of ``sigma-pyro compare``, bold
best means, paired tests, missing variants, malformed files and the computed verdict."""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import sys
from pathlib import Path

import pandas as pd
import pytest

from sigma_pyro.cli.main import main
from sigma_pyro.experiments.compare import COLUMNS, METRICS
from sigma_pyro.experiments.results_table import load_results, render_results, verdict

REPO = Path(__file__).resolve().parents[1]
LABELS = ("Recall@10", "Recall@20", "NDCG@10", "NDCG@20", "MRR")


# Per-seed jitter of a run around its variant's mean; each variant starts the cycle at a
# different seed, so paired differences vary yet cancel exactly over five seeds.
WIGGLE = (0.002, -0.002, 0.001, -0.001, 0.0)


def runs(means: dict[str, dict[str, float]], seeds: int = 5) -> list[dict]:
    """Rows of results.csv: per variant, every metric at its mean (0.1 unless given) plus a
    per-seed offset shared by all variants, which pairing removes, and the jitter."""
    rows = []
    for index, (prior, metric_means) in enumerate(means.items()):
        for seed in range(seeds):
            offset = 0.01 * (seed % 3) + WIGGLE[(seed + index) % len(WIGGLE)]
            metrics = {m: metric_means.get(m, 0.1) + offset for m in METRICS}
            rows.append(
                {
                    "prior": prior,
                    "seed": seed,
                    "status": "ok",
                    **metrics,
                    "epochs": 40 + seed,
                    "best_epoch": 30 + seed,
                    "stopped_early": True,
                    "wall_seconds": 100.0,
                    "run_dir": f"runs/{prior}-seed{seed}",
                    "code": "abc123",
                }
            )
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(path, index=False)
    return path


def render(tmp_path: Path, rows: list[dict], name: str = "Beauty") -> str:
    frame = load_results([write_csv(tmp_path / f"{name}.csv", rows)])
    return render_results(frame, "sigma-pyro results --runs x --out y", "test machine")


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith(f"| {first_cell}")
    ]


def test_bold_marks_the_best_mean_of_each_metric(tmp_path):
    text = render(
        tmp_path,
        runs(
            {
                "normal": {"recall@10": 0.3, "mrr": 0.3},
                "sigma": {"recall@20": 0.3, "ndcg@10": 0.3},
                "deterministic": {"ndcg@20": 0.3},
            }
        ),
    )
    header = table_rows(text, "variant")[0]
    rows = {
        row[0]: dict(zip(header, row, strict=True))
        for row in table_rows(text, "")
        if row[0] in ("sigma", "normal", "deterministic")
    }
    assert list(rows) == ["sigma", "normal", "deterministic"]
    winners = {
        "Recall@10": "normal",
        "Recall@20": "sigma",
        "NDCG@10": "sigma",
        "NDCG@20": "deterministic",
        "MRR": "normal",
    }
    for label, winner in winners.items():
        bold = [v for v, row in rows.items() if row[label].startswith("**")]
        assert bold == [winner], label
    assert re.fullmatch(r"\*\*0\.\d{4} ± 0\.\d{4}\*\*", rows["sigma"]["Recall@20"])


def test_a_planted_paired_difference_is_significant_with_its_sign(tmp_path):
    text = render(
        tmp_path,
        runs({"sigma": {"ndcg@10": 0.12, "mrr": 0.08}, "normal": {"ndcg@10": 0.10, "mrr": 0.10}}),
    )
    header, row = table_rows(text, "paired difference")[0], table_rows(text, "sigma − normal")[0]
    cells = dict(zip(header, row, strict=True))
    ndcg, mrr = row[header.index("Δ NDCG@10") + 1], row[header.index("Δ MRR") + 1]
    assert cells["Δ NDCG@10"].startswith("+0.02") and float(ndcg.replace("< ", "")) < 0.05
    assert cells["Δ MRR"].startswith("-0.02") and float(mrr.replace("< ", "")) < 0.05
    assert "significantly better on NDCG@10 and worse on MRR" in text


def test_a_missing_variant_has_no_paired_comparison(tmp_path):
    text = render(tmp_path, runs({"sigma": {}, "normal": {}}))
    row = table_rows(text, "sigma − deterministic")[0]
    assert row[1] == "n/a: no paired seeds" and set(row[2:]) == {"n/a"}
    assert "no finished deterministic runs" in text
    assert not table_rows(text, "deterministic")


def test_a_single_seed_shows_no_standard_deviation(tmp_path):
    text = render(tmp_path, runs({"sigma": {}, "normal": {}}, seeds=1))
    sigma = table_rows(text, "sigma |")[0]
    assert all(re.fullmatch(r"(\*\*)?0\.\d{4} ± –(\*\*)?", cell) for cell in sigma[2:7])
    assert "a single seed paired with normal is too few to test" in text


def test_failed_runs_are_left_out_and_listed(tmp_path):
    rows = runs({"sigma": {}, "normal": {}}, seeds=2)
    rows.append(
        {
            "prior": "sigma",
            "seed": 2,
            "status": "failed: non-finite ELBO",
            "run_dir": "runs/sigma-seed2",
            "code": "abc123",
        }
    )
    text = render(tmp_path, rows)
    assert table_rows(text, "sigma |")[0][1] == "2"
    assert "- sigma seed 2: failed: non-finite ELBO" in text
    assert "4 finished, 1 failed" in text


def test_the_verdict_follows_the_numbers(tmp_path):
    def sentence(sigma_mean: float) -> str:
        rows = runs({"sigma": {m: sigma_mean for m in METRICS}, "normal": {}})
        path = write_csv(tmp_path / "Toys_and_Games.csv", rows)
        return verdict(load_results([path]))

    ahead, behind, level = sentence(0.2), sentence(0.0), sentence(0.1)
    assert ahead.startswith("sigma has the best mean on 5 of 5 metrics")
    assert "significantly better on Recall@10, Recall@20, NDCG@10, NDCG@20 and MRR" in ahead
    assert behind.startswith("sigma has the best mean on 0 of 5 metrics")
    assert "it does not win Recall@10 (best: normal)" in behind
    assert "significantly worse on" in behind
    assert "no difference to normal is significant at p < 0.05 (5 paired seeds)" in level
    assert len({ahead, behind, level}) == 3


def test_the_cli_writes_the_table_with_its_regenerate_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("results").mkdir()
    write_csv(Path("results/Beauty.csv"), runs({"sigma": {}, "normal": {}}))
    write_csv(Path("results/Office_Products.csv"), runs({"normal": {}}))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["results", "--runs", "results/Beauty.csv", "results/Office_Products.csv"]) == 0
    text = Path("docs/results.md").read_text(encoding="utf-8")
    assert (
        "sigma-pyro results --runs results/Beauty.csv results/Office_Products.csv "
        "--out docs/results.md"
    ) in text
    assert "## Beauty" in text and "## Office_Products" in text
    assert "no finished sigma runs" in text
    assert "`abc123`: 15 runs (Beauty, Office_Products)" in text
    assert re.search(r"machine: \S+ \S+, \d+ CPUs, ", text)

    monkeypatch.setattr(
        sys, "argv", ["results_table.py", "--runs", "results/Beauty.csv", "--out", "other.md"]
    )
    with pytest.raises(SystemExit) as info, contextlib.redirect_stdout(io.StringIO()):
        runpy.run_path(str(REPO / "scripts" / "results_table.py"), run_name="__main__")
    assert info.value.code == 0 and "## Beauty" in Path("other.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda path: path.unlink(), "no such results file"),
        (
            lambda path: path.write_text("prior,seed,status\nsigma,0,ok\n"),
            "missing column(s) recall@10",
        ),
        (
            lambda path: path.write_text(path.read_text().replace(",ok,0.", ",ok,x0.", 1)),
            "row 1: recall@10 is not a number ('x0.",
        ),
        (lambda path: path.write_text(""), "not a results CSV"),
    ],
)
def test_a_malformed_file_is_a_one_line_error_naming_it(tmp_path, capsys, damage, message):
    path = write_csv(tmp_path / "Beauty.csv", runs({"sigma": {}}))
    damage(path)
    assert main(["results", "--runs", str(path), "--out", str(tmp_path / "out.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and message in err
    assert not (tmp_path / "out.md").exists()


def test_a_finished_run_recorded_twice_is_refused(tmp_path, capsys):
    rows = runs({"sigma": {}}, seeds=2)
    path = write_csv(tmp_path / "Beauty.csv", rows + rows[:1])
    assert main(["results", "--runs", str(path), "--out", str(tmp_path / "out.md")]) == 2
    assert "sigma seed 0 is recorded as finished more than once" in capsys.readouterr().err


def test_published_numbers_sit_beside_sigma_and_in_the_figure(tmp_path, capsys):
    beauty = write_csv(tmp_path / "Beauty.csv", runs({"sigma": {"recall@20": 0.12}, "normal": {}}))
    published = tmp_path / "published.csv"
    published.write_text(
        "dataset,model,source,recall@20,ndcg@20\n"
        "Beauty,PaperA,A (2022),0.1000,\n"
        "Toys_and_Games,PaperB,B (2023),0.2000,0.1\n"
    )
    figure, out = tmp_path / "images" / "results.png", tmp_path / "docs" / "results.md"
    args = ["results", "--runs", str(beauty), "--published", str(published)]
    assert main([*args, "--figure", str(figure), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    # sigma's Recall@20 mean is 0.12 + the mean seed offset 0.008 (see runs()); no paper
    # reported NDCG@20 on Beauty, so it has no column.
    assert "| published | source | Recall@20 | sigma − it |" in text
    assert "| PaperA | A (2022) | 0.1000 | +0.0280 |" in text
    assert "PaperB" not in text  # no Toys runs in this table
    assert "![test Recall@20 and NDCG@20 of every variant](../images/results.png)" in text
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()

    published.write_text("dataset,model,source,recall@20\nBeauty,PaperA,A,high\n")
    assert main([*args, "--out", str(tmp_path / "other.md")]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip() == f"sigma-pyro: error: {published}: row 1: recall@20 is not a number ('high')"
    )
    assert not (tmp_path / "other.md").exists()


def tuning_csv(path: Path, command: str, lr: float) -> Path:
    """A one-trial tuning.csv of `sigma-pyro tune`, its trial at ``lr``."""
    trial = {"number": 0, "state": "complete", "param_lr": lr}
    trial |= {f"valid_{m}": 0.08 for m in METRICS}
    trial |= {"best_epoch": 7, "epochs": 12, "wall_seconds": 60.0, "criterion": "ndcg@20"}
    trial |= {"code": "abc123", "command": command}
    pd.DataFrame([trial]).to_csv(path, index=False)
    return path


def test_a_dataset_shows_each_of_its_studies_with_the_variant_it_trained(tmp_path, capsys):
    office = write_csv(tmp_path / "Office_Products.csv", runs({"sigma": {}, "normal": {}}))
    (tmp_path / "study").mkdir()
    sweep = tuning_csv(tmp_path / "sweep.csv", "sigma-pyro tune --sweep lr=2", 2.0)
    network = tuning_csv(
        tmp_path / "study" / "tuning.csv", "sigma-pyro tune --prior deterministic", 0.5
    )
    out = tmp_path / "results.md"
    entries = [f"Office_Products={sweep}", f"Office_Products={network}"]
    assert main(["results", "--runs", str(office), "--tuning", *entries, "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    sections = text.split("### Settings tried on validation")[1:]
    assert len(sections) == 2
    assert sections[0].lstrip().startswith("sigma trained once per trial")
    assert "`lr=2`" in sections[0]
    assert sections[1].lstrip().startswith("deterministic trained once per trial")
    assert "`lr=0.5`" in sections[1]
    assert f"--tuning Office_Products={sweep} Office_Products={network}" in text
    capsys.readouterr()

    assert main(["results", "--runs", str(office), "--tuning", f"Beauty={network}"]) == 2
    assert capsys.readouterr().err.strip() == (
        "sigma-pyro: error: --tuning Beauty: no results file of that dataset in --runs"
    )
    assert main(["results", "--runs", str(office), "--tuning", f"={network}"]) == 2
    assert "expected DATASET=PATH" in capsys.readouterr().err
