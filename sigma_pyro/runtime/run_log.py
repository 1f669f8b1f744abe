"""A training run's record in its folder: ``history.csv``, TensorBoard events, ``curves.png``.

``history.csv`` has one row per epoch and is rewritten atomically after each one, so an
interrupted run leaves every finished epoch readable. On ``--resume`` the rows of the epochs
before the resume point are kept; an epoch that ran again after a crash replaces its old row
instead of adding a second one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sigma_pyro.errors import CheckpointError
from sigma_pyro.inference.training import EpochRecord
from sigma_pyro.runtime.checkpoint import atomic_write_bytes

HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
TENSORBOARD_DIR = "tensorboard"
# Column prefixes of the grouped scalars; TensorBoard shows each group as one section.
_GROUPS = ("interest_valid_", "valid_", "term_")


def epoch_row(record: EpochRecord) -> dict[str, float]:
    """One epoch as a flat row: the mean training loss, the ELBO terms of the monitoring
    batch (``term_*``), the schedules, the validation metrics of both heads, time, memory."""
    return {
        "epoch": record.epoch,
        "step": record.step,
        "loss": record.loss,
        **{f"term_{name}": value for name, value in record.terms.items()},
        "beta": record.kl_scale,
        "interest_weight": record.interest_scale,
        **{f"valid_{name}": value for name, value in _metrics(record.valid)},
        **{f"interest_valid_{name}": value for name, value in _metrics(record.interest_valid)},
        "seconds": record.seconds,
        "peak_rss_mb": record.peak_rss_mb,
    }


def _metrics(valid: dict[str, float]):
    # The count of validated users is the same every epoch; metrics.json has it.
    return ((name, value) for name, value in valid.items() if name != "num_users")


def scalar_tag(column: str) -> str:
    """The TensorBoard tag of a history column: ``valid_ndcg@10`` is ``valid/ndcg@10``."""
    for prefix in _GROUPS:
        if column.startswith(prefix):
            return f"{prefix[:-1]}/{column[len(prefix) :]}"
    return column


class TrainingHistory:
    """The epoch rows of one run, oldest first."""

    def __init__(self, rows: list[dict] | None = None):
        self.rows = list(rows or [])

    @classmethod
    def read(cls, path: Path) -> TrainingHistory:
        """The rows in ``path``; none when it does not exist (a run from before it did)."""
        path = Path(path)
        if not path.is_file():
            return cls()
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{path}: unreadable training history ({reason})") from None
        if "epoch" not in frame.columns:
            raise CheckpointError(f"{path}: not a training history (no 'epoch' column)")
        return cls(frame.to_dict("records"))

    def add(self, record: EpochRecord) -> dict[str, float]:
        """Append an epoch, dropping any rows of it or later ones; returns its row."""
        row = epoch_row(record)
        self.keep_until(record.epoch - 1)
        self.rows.append(row)
        return row

    def keep_until(self, epoch: int) -> None:
        """Forget the rows after ``epoch``."""
        self.rows = [row for row in self.rows if row["epoch"] <= epoch]

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows)
        if not frame.empty:
            frame[["epoch", "step"]] = frame[["epoch", "step"]].astype(int)
        return frame

    def best_epoch(self, metric: str) -> int | None:
        """The first epoch with the highest validation ``metric``, as early stopping counts
        improvements (strictly better only); None before any epoch."""
        frame = self.frame()
        column = f"valid_{metric}"
        if frame.empty or column not in frame or frame[column].isna().all():
            return None
        return int(frame.loc[frame[column].idxmax(), "epoch"])

    def write(self, path: Path) -> None:
        atomic_write_bytes(path, self.frame().to_csv(index=False).encode("utf-8"))


def tensorboard_available() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


class RunLog:
    """Adds each epoch to ``history`` and, for a run with a folder, keeps its
    ``history.csv`` and (with ``tensorboard``) its event files up to date after every
    epoch; :meth:`close` draws ``curves.png``."""

    def __init__(
        self, history: TrainingHistory, out_dir: Path | None, metric: str, tensorboard: bool
    ):
        self.history = history
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.metric = metric
        self.tensorboard = tensorboard and out_dir is not None and tensorboard_available()
        self._writer = None

    def epoch(self, record: EpochRecord) -> None:
        row = self.history.add(record)
        if self.out_dir is not None:
            self.history.write(self.out_dir / HISTORY_FILE)
        if self.tensorboard:
            self._scalars(row)

    def _scalars(self, row: dict[str, float]) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides the events a crashed run wrote for the epochs that run again.
            self._writer = SummaryWriter(self.out_dir / TENSORBOARD_DIR, purge_step=row["epoch"])
        for column, value in row.items():
            if column != "epoch":
                self._writer.add_scalar(scalar_tag(column), value, row["epoch"])
        self._writer.flush()

    def close(self) -> None:
        """Finish the event files, rewrite ``history.csv`` (the caller may have trimmed the
        history) and draw ``curves.png``."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.out_dir is None or not self.history.rows:
            return
        from sigma_pyro.runtime.curves import render_curves

        self.history.write(self.out_dir / HISTORY_FILE)
        best = self.history.best_epoch(self.metric)
        atomic_write_bytes(
            self.out_dir / CURVES_FILE, render_curves(self.history.frame(), best, self.metric)
        )
