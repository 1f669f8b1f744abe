"""The Python API: the same steps as the CLI, for use from code and notebooks.

from sigma_pyro import SigmaRecommender
rec = SigmaRecommender.from_preset("office", data_path="../shared/data/Office_Products.txt")
rec.fit(out_dir="runs/office")
rec.evaluate("test")
rec.recommend([["12", "845"]], k=10)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sigma_pyro.config import Config, load_config, nest_overrides
from sigma_pyro.data.dataset import LeaveOneOutSplit, SequenceDataset
from sigma_pyro.data.interactions import Interactions
from sigma_pyro.data.loading import read_configured_data
from sigma_pyro.errors import CheckpointError
from sigma_pyro.evaluation.baselines import baseline_metrics
from sigma_pyro.evaluation.evaluate import evaluate_module
from sigma_pyro.evaluation.explain import interest_table
from sigma_pyro.evaluation.export import table_format, write_chunks
from sigma_pyro.evaluation.interest_head import interest_summary
from sigma_pyro.evaluation.recommendations import (
    explain_histories,
    known_users,
    recommend_histories,
    recommendation_frames,
)
from sigma_pyro.inference.training import Trainer, TrainingSummary
from sigma_pyro.nn.module import SigmaModule
from sigma_pyro.runtime.checkpoint import MODEL_FILE, safe_torch_load
from sigma_pyro.runtime.distributed import World
from sigma_pyro.runtime.model_folder import check_same_items, load_model, save_model
from sigma_pyro.runtime.resources import check_training_memory
from sigma_pyro.runtime.run_log import HISTORY_FILE, RunLog, TrainingHistory


class SigmaRecommender:
    """Load data, fit SIGMA (or a prior variant) with SVI, evaluate, recommend, save, load."""

    def __init__(self, config: Config | None = None):
        self.config = (config or Config()).validate()
        self.dataset: SequenceDataset | None = None
        self.synthetic = None
        self.module: SigmaModule | None = None
        self.data_report: dict = {}
        self._history = TrainingHistory()

    @classmethod
    def from_preset(cls, preset: str | None = None, **overrides) -> SigmaRecommender:
        """A preset (synthetic, beauty, toys, office or a YAML path) with flat overrides,
        e.g. ``from_preset("office", path="...", prior="normal", epochs=5)``."""
        return cls(load_config(preset, nest_overrides(overrides)))

    # -- data --------------------------------------------------------------------------------
    def load_data(self, interactions: Interactions | None = None) -> SequenceDataset:
        """Read the configured data (or use ``interactions``) and encode it. A loaded model
        keeps its own item vocabulary: unseen items are dropped and counted."""
        if interactions is None:
            interactions, self.synthetic = read_configured_data(self.config.data)
        vocabulary = self.dataset.items if self.module is not None and self.dataset else None
        self.dataset, self.data_report = SequenceDataset.from_interactions(interactions, vocabulary)
        self.data_report["skipped_short_users"] = interactions.skipped_users
        return self.dataset

    def _require_data(self) -> SequenceDataset:
        """The loaded data, reading it first if needed (a loaded model has only its item
        vocabulary until then)."""
        if self.dataset is None or self.dataset.num_users == 0:
            self.load_data()
        return self.dataset

    @property
    def split(self) -> LeaveOneOutSplit:
        """Users with fewer than 3 (known) items are left out; ``data_report`` counts them."""
        if self.dataset is None:
            self.load_data()
        return self.dataset.leave_one_out(skip_short=True)

    # -- training ----------------------------------------------------------------------------
    def build_module(self) -> SigmaModule:
        if self.dataset is None:
            self.load_data()
        # Seeded initialisation that leaves the caller's global RNG alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.train.seed)
            self.module = SigmaModule(self.dataset.num_items, self.config.model)
        counts = torch.bincount(
            torch.as_tensor(np.concatenate(self.split.train)), minlength=self.dataset.num_items + 1
        )
        self.module.set_sampling_counts(counts[1:].float())
        return self.module

    def fit(
        self, out_dir: str | Path | None = None, resume: bool = False, log=None, *, on_epoch=None
    ) -> TrainingSummary:
        """Train with SVI until early stopping; keep (and, with ``out_dir``, save) the model
        with the best validation metric. ``on_epoch(record)`` sees each epoch's
        :class:`~sigma_pyro.inference.training.EpochRecord`.

        Inside an initialised torch.distributed process group every rank calls this (and
        then ``evaluate``) with the same arguments and trains data-parallel; only rank 0
        writes into ``out_dir``, and every rank ends with the best weights."""
        if self.dataset is None:
            self.load_data()
        split = self.split
        check_training_memory(
            self.config, self.dataset.num_items, [len(s) - 1 for s in split.train]
        )
        if resume and out_dir is not None:
            check_same_items(out_dir, self.dataset.items, self.dataset.source)
        module = self.build_module()
        world = World.current()
        run_log = self._run_log(out_dir, resume, writes=world.is_main)
        best_state: dict = {}

        def keep_best(module, epoch, valid):
            best_state["module"] = {k: v.detach().clone() for k, v in module.state_dict().items()}
            if out_dir is not None and world.is_main:
                self.save(out_dir, extra={"best_epoch": epoch, "valid": valid})

        def record_epoch(record):
            run_log.epoch(record)
            if on_epoch is not None:
                on_epoch(record)

        trainer = Trainer(
            module,
            split,
            self.config,
            state_dir=out_dir,
            on_improvement=keep_best,
            log=log,
            on_epoch=record_epoch,
            world=world,
        )
        try:
            summary = trainer.fit(resume=resume)
            # A resumed run may have stopped at once, before replacing an epoch that a crash
            # had recorded after the saved state.
            run_log.history.keep_until(summary.epochs_run)
        finally:
            run_log.close()
        if "module" in best_state:
            module.load_state_dict(best_state["module"])
        elif resume and out_dir is not None and (Path(out_dir) / MODEL_FILE).is_file():
            # Resumed after the best epoch: the best weights are those saved on disk.
            module.load_state_dict(safe_torch_load(Path(out_dir) / MODEL_FILE))
        module.eval()
        return summary

    def _run_log(self, out_dir: str | Path | None, resume: bool, writes: bool = True) -> RunLog:
        """The run's epoch history (continued from ``history.csv`` on resume) and, with a
        folder and ``writes``, its files."""
        resumed = resume and out_dir is not None
        self._history = (
            TrainingHistory.read(Path(out_dir) / HISTORY_FILE) if resumed else TrainingHistory()
        )
        train = self.config.train
        return RunLog(
            self._history, out_dir if writes else None, train.early_stop_metric, train.tensorboard
        )

    @property
    def history(self) -> pd.DataFrame:
        """One row per epoch of the last fit (of the saved run, after ``load``): the columns
        of ``history.csv``. Empty before training."""
        return self._history.frame()

    # -- evaluation and recommendation ---------------------------------------------------------
    def _require_module(self) -> SigmaModule:
        if self.module is None:
            raise CheckpointError("no model: call fit() or SigmaRecommender.load() first")
        return self.module

    def evaluate(self, split: str = "test") -> dict:
        """Full-ranking metrics on ``valid`` or ``test`` of the loaded data."""
        module = self._require_module()
        histories, targets = self._split_arrays(split)
        return evaluate_module(
            module,
            histories,
            targets,
            self.config.eval,
            self.config.train.device,
            world=World.current(),
        )

    def interest_summary(self, split: str = "valid") -> dict | None:
        """Health of the multi-interest part on a split (see
        :func:`sigma_pyro.evaluation.interest_head.interest_summary`); None without one."""
        histories, targets = self._split_arrays(split)
        return interest_summary(
            self._require_module(),
            histories,
            targets,
            self.config.eval,
            self.config.train.device,
        )

    def _split_arrays(self, split: str):
        data = self.split
        if split == "valid":
            return data.valid_history, data.valid_target
        if split == "test":
            return data.test_history, data.test_target
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")

    def baselines(self, split: str = "test") -> dict[str, dict]:
        """Reference points for the metrics: popularity (counts over the histories of the
        split, all of which the model may see) and, on synthetic data, the Bayes-optimal
        ranking under the generator's true next-item law."""
        return baseline_metrics(
            self.split, split, self.dataset.num_items, self.config.eval, self.synthetic
        )

    def recommend(
        self, histories: list[list[str]], k: int = 10, exclude_history: bool = True
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` (raw item id, score) for each history of raw item ids. Items the model
        never saw are skipped with a SigmaPyroWarning naming them; a history with no known
        item raises DataError."""
        return recommend_histories(
            self._require_module(), self.dataset.items, histories, k, self.config, exclude_history
        )

    def recommend_users(self, users: list[str], k: int = 10) -> dict[str, list[tuple[str, float]]]:
        """Top-``k`` next items after each named user's full sequence in the loaded data, by
        user; unknown users are skipped with a SigmaPyroWarning (DataError if all are)."""
        histories = self.user_histories(users)
        return dict(zip(histories, self.recommend(list(histories.values()), k), strict=True))

    def recommend_all(self, k: int = 10, users: list[str] | None = None) -> pd.DataFrame:
        """Columns user, rank, item, score (raw ids) for every user of the loaded data, or
        the named ones: ``k`` rows each, history excluded."""
        return pd.concat(list(self._recommendation_frames(k, users)), ignore_index=True)

    def write_recommendations(
        self, path: str | Path, k: int = 10, users: list[str] | None = None, progress: bool = True
    ) -> int:
        """:meth:`recommend_all` straight to a CSV or Parquet file (by its extension),
        chunk by chunk and atomically; returns the number of rows."""
        table_format(path)  # an unusable name fails before any scoring
        return write_chunks(Path(path), self._recommendation_frames(k, users, progress))

    def explain(self, histories: list[list[str]], k: int = 10) -> list[list[dict]]:
        """:meth:`recommend` with, for each item, the user's interest that ranks it highest
        under the interest head (``interest``, a hyper-category index as in
        :meth:`describe_interests`), its ``intensity``, and the ``history`` items that carry
        it, most recent first. Only for priors with interests (else ConfigError)."""
        return explain_histories(
            self._require_module(), self.dataset.items, histories, k, self.config
        )

    def describe_interests(self, n: int = 10, titles: dict[str, str] | None = None) -> pd.DataFrame:
        """Each hyper-category (prototype) with its ``share`` of the catalog (items whose
        strongest assignment it is) and its ``n`` most typical items by assignment
        ``probability``: columns interest, share, rank, item (raw id), probability, and
        ``title`` when ``titles`` maps raw ids to titles. Only for priors with interests."""
        return interest_table(self._require_module(), self.dataset.items, n, titles)

    def user_histories(self, users: list[str]) -> dict[str, list[str]]:
        """Each known user's full sequence in the loaded data, in raw item ids; unknown users
        are skipped with a SigmaPyroWarning (DataError if all are)."""
        dataset = self._require_data()
        return {
            user: dataset.items.decode(dataset.sequences[dataset.user_position(user)])
            for user in known_users(dataset, users)
        }

    def _recommendation_frames(
        self, k: int, users: list[str] | None, progress: bool = False
    ) -> Iterator[pd.DataFrame]:
        """The rows of :meth:`recommend_all`; lazily, so that a writer's own checks come
        before the users' and the model's."""
        users = known_users(self._require_data(), users)
        module = self._require_module()
        yield from recommendation_frames(module, self.dataset, users, k, self.config, progress)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, out_dir: str | Path, extra: dict | None = None) -> Path:
        return save_model(out_dir, self._require_module(), self.config, self.dataset.items, extra)

    @classmethod
    def load(cls, model_dir: str | Path, **data_overrides) -> SigmaRecommender:
        """A saved model; ``data_overrides`` (e.g. ``path=...``) change which data it is
        evaluated on or recommends for, keeping the model's item vocabulary."""
        saved = load_model(model_dir, data_overrides)
        rec = cls(saved.config)
        rec.module = saved.module
        rec.dataset = SequenceDataset([], [], saved.items)
        rec.meta = saved.meta
        rec._history = TrainingHistory.read(Path(model_dir) / HISTORY_FILE)
        return rec
