"""Reading the raw runs of the results table: the ``results.csv`` of ``sigma-pyro compare``
and the ``tuning.csv`` of ``sigma-pyro tune``, each file named by its dataset (its stem, or
``DATASET=PATH`` for a study's own ``tuning.csv``). A malformed file is a one-line DataError
naming the file, row and column."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sigma_pyro.errors import DataError
from sigma_pyro.experiments.metrics import METRICS
from sigma_pyro.experiments.tuning_report import FINISHED_STATES, TUNING_METRICS

NUMERIC = (*METRICS, "epochs", "wall_seconds")
REQUIRED = ("prior", "seed", "status", *NUMERIC, "stopped_early", "code")


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: no such results file")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a results CSV ({reason})") from None


def _numbers(path: Path, frame: pd.DataFrame, column: str, rows: pd.Series) -> pd.Series:
    """``column`` as floats; every selected row must hold a finite number, since a blank or
    garbled metric of a finished run would otherwise silently drop out of the means."""
    values = pd.to_numeric(frame[column], errors="coerce").astype(float)
    bad = rows & ~values.map(math.isfinite)
    if bad.any():
        row = int(bad.idxmax())
        raw = frame[column][row]
        shown = "empty" if pd.isna(raw) else repr(raw)
        raise DataError(f"{path}: row {row + 1}: {column} is not a number ({shown})")
    return values


def _require_columns(frame: pd.DataFrame, path: Path, required, written_by: str) -> None:
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; expected the {written_by} writes"
        )


def _load_one(path: Path) -> pd.DataFrame:
    frame = _read_csv(path)
    _require_columns(frame, path, REQUIRED, "results.csv that `sigma-pyro compare`")
    frame["status"] = frame["status"].astype(str)
    frame["prior"] = frame["prior"].astype(str)
    ok = frame["status"] == "ok"
    for column in NUMERIC:
        frame[column] = _numbers(path, frame, column, ok)
    seeds = _numbers(path, frame, "seed", pd.Series(True, index=frame.index))
    fractional = seeds != seeds.round()
    if fractional.any():
        raise DataError(f"{path}: row {int(fractional.idxmax()) + 1}: seed is not an integer")
    frame["seed"] = seeds.astype(int)
    # Pairing by seed needs one finished run per (variant, seed).
    twice = frame[ok].duplicated(["prior", "seed"])
    if twice.any():
        row = frame[ok][twice].iloc[0]
        raise DataError(
            f"{path}: {row['prior']} seed {row['seed']} is recorded as finished more than once"
        )
    frame["stopped_early"] = frame["stopped_early"].astype(str).str.lower() == "true"
    frame["code"] = frame["code"].fillna("unknown").astype(str)
    return frame.assign(dataset=path.stem)


def load_results(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The runs of every file, with a ``dataset`` column (the file's stem)."""
    if not paths:
        raise DataError("no results files given")
    frames, seen = [], {}
    for path in map(Path, paths):
        if path.stem in seen:
            raise DataError(f"{path}: dataset {path.stem} already read from {seen[path.stem]}")
        seen[path.stem] = path
        frames.append(_load_one(path))
    return pd.concat(frames, ignore_index=True)


def tuning_source(entry: str | Path) -> tuple[str, Path]:
    """``DATASET=PATH``, or a path whose stem names the dataset."""
    text = str(entry)
    dataset, equals, path = text.partition("=")
    if equals:
        if not dataset or not path:
            raise DataError(
                f"--tuning {text}: expected DATASET=PATH or a CSV named after its dataset"
            )
        return dataset, Path(path)
    return Path(text).stem, Path(text)


def load_tuning(entries: Sequence[str | Path]) -> dict[str, list[pd.DataFrame]]:
    """The ``tuning.csv`` tables of ``sigma-pyro tune`` per dataset, in the order given: a
    dataset may have several studies (say, one of the shared network and one of a
    variant's own knobs)."""
    tables: dict[str, list[pd.DataFrame]] = {}
    seen: set[Path] = set()
    for dataset, path in map(tuning_source, entries):
        if (resolved := path.resolve()) in seen:
            raise DataError(f"{path}: tuning file given twice")
        seen.add(resolved)
        frame = _read_csv(path)
        required = (
            "number",
            "state",
            "criterion",
            "best_epoch",
            "epochs",
            "wall_seconds",
            *TUNING_METRICS,
        )
        _require_columns(frame, path, required, "tuning.csv that `sigma-pyro tune`")
        frame["state"] = frame["state"].astype(str)
        # A pruned trial holds the metrics of its best epoch before the pruner stopped it.
        scored = frame["state"].isin(FINISHED_STATES)
        for column in (*TUNING_METRICS, "best_epoch", "epochs", "wall_seconds"):
            frame[column] = _numbers(path, frame, column, scored)
        for column in ("code", "command", "retry_of", "error"):
            if column not in frame.columns:
                frame[column] = None
        tables.setdefault(dataset, []).append(frame)
    return tables
