"""The Python API: the same steps as the CLI, for use from code and notebooks.

from sigma_pyro import SigmaRecommender
rec = SigmaRecommender.from_preset("office", data_path="../shared/data/Office_Products.txt")
rec.fit(out_dir="runs/office")
rec.evaluate("test")
rec.recommend([["12", "845"]], k=10)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sigma_pyro.config import Config, check_device, load_config, nest_overrides
from sigma_pyro.data.batching import pad_right
from sigma_pyro.data.dataset import ItemVocabulary, LeaveOneOutSplit, SequenceDataset
from sigma_pyro.data.interactions import Interactions
from sigma_pyro.data.loading import read_configured_data
from sigma_pyro.errors import CheckpointError, ConfigError, DataError, SigmaPyroWarning
from sigma_pyro.evaluation.evaluate import evaluate_module
from sigma_pyro.evaluation.explain import (
    catalog_shares,
    explain_items,
    item_assignments,
    require_interests,
    typical_items,
)
from sigma_pyro.evaluation.export import table_format, write_chunks
from sigma_pyro.evaluation.interest_head import interest_summary
from sigma_pyro.evaluation.predict import ranked_chunks
from sigma_pyro.evaluation.ranking import PopularityRecommender, evaluate_ranking
from sigma_pyro.inference.training import Trainer, TrainingSummary
from sigma_pyro.nn.module import SigmaModule
from sigma_pyro.runtime.checkpoint import (
    FORMAT_VERSION,
    META_FILE,
    MODEL_FILE,
    atomic_torch_save,
    atomic_write_json,
    library_versions,
    read_json,
    safe_torch_load,
)
from sigma_pyro.runtime.distributed import World
from sigma_pyro.runtime.progress import progress_bar
from sigma_pyro.runtime.resources import check_training_memory
from sigma_pyro.runtime.run_log import HISTORY_FILE, RunLog, TrainingHistory

# Unknown ids named in a warning or error; the rest are counted.
_NAMED_UNKNOWN = 5


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
        meta_path = Path(out_dir) / META_FILE if resume and out_dir is not None else None
        if (
            meta_path is not None
            and meta_path.is_file()
            and read_json(meta_path).get("items") != self.dataset.items.raw_ids
        ):
            raise CheckpointError(
                f"{meta_path}: the saved model was trained on other items than "
                f"{self.dataset.source}; resume needs the same data"
            )
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
        data = self.split
        histories, targets = (
            (data.valid_history, data.valid_target)
            if split == "valid"
            else (data.test_history, data.test_target)
        )
        popularity = PopularityRecommender().fit(histories, self.dataset.num_items)
        out = {
            "popularity": evaluate_ranking(
                popularity.score_items_for_users,
                torch.as_tensor(targets),
                pad_right(histories, max(map(len, histories))),
                self.dataset.num_items,
                ks=self.config.eval.ks,
                mask_history=self.config.eval.mask_history,
            )
        }
        if self.synthetic is not None:
            out["bayes_optimal"] = self.synthetic.bayes_optimal_metrics(self.config.eval.ks, split)
        return out

    def recommend(
        self, histories: list[list[str]], k: int = 10, exclude_history: bool = True
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` (raw item id, score) for each history of raw item ids. Items the model
        never saw are skipped with a SigmaPyroWarning naming them; a history with no known
        item raises DataError."""
        encoded = self._encode_histories(histories)
        return [
            list(zip(self.dataset.items.decode(items), scores.tolist(), strict=True))
            for items, scores in self._top_items(encoded, k, exclude_history)
        ]

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
        module = self._require_module()
        require_interests(module)
        encoded = self._encode_histories(histories)
        ranked = self._top_items(encoded, k)
        explanations = explain_items(
            module,
            encoded,
            [items for items, _ in ranked],
            self.config.train.device,
        )
        decode = self.dataset.items.decode
        return [
            [
                {
                    "item": item,
                    "score": score,
                    "interest": why.interest,
                    "intensity": why.intensity,
                    "history": decode(why.history),
                }
                for item, score, why in zip(decode(items), scores.tolist(), row, strict=True)
            ]
            for (items, scores), row in zip(ranked, explanations, strict=True)
        ]

    def describe_interests(self, n: int = 10, titles: dict[str, str] | None = None) -> pd.DataFrame:
        """Each hyper-category (prototype) with its ``share`` of the catalog (items whose
        strongest assignment it is) and its ``n`` most typical items by assignment
        ``probability``: columns interest, share, rank, item (raw id), probability, and
        ``title`` when ``titles`` maps raw ids to titles. Only for priors with interests."""
        assignment = item_assignments(self._require_module())
        probabilities, items = typical_items(assignment, n)
        shares = catalog_shares(assignment)
        frame = pd.DataFrame(
            {
                "interest": np.repeat(np.arange(len(shares)), probabilities.shape[1]),
                "share": np.repeat(shares.cpu().numpy(), probabilities.shape[1]),
                "rank": np.tile(np.arange(1, probabilities.shape[1] + 1), len(shares)),
                "item": self.dataset.items.decode(items.flatten().tolist()),
                "probability": probabilities.flatten().cpu().numpy(),
            }
        )
        if titles is not None:
            frame["title"] = frame["item"].map(titles).fillna("")
        return frame

    def user_histories(self, users: list[str]) -> dict[str, list[str]]:
        """Each known user's full sequence in the loaded data, in raw item ids; unknown users
        are skipped with a SigmaPyroWarning (DataError if all are)."""
        dataset = self._require_data()
        return {
            user: dataset.items.decode(dataset.sequences[dataset.user_position(user)])
            for user in self._known_users(users)
        }

    def _known_users(self, users: list[str] | None) -> list[str]:
        """The users of the loaded data among ``users`` (all of them for None); one warning
        names the unknown ones."""
        dataset = self._require_data()
        if users is None:
            return dataset.users
        users = [str(u) for u in users]
        known = [u for u in users if dataset.has_user(u)]
        unknown = list(dict.fromkeys(u for u in users if not dataset.has_user(u)))
        if not users:
            raise DataError("no user ids given")
        if not known:
            raise DataError(f"{dataset.source}: none of the users is known: {_named(unknown)}")
        if unknown:
            _warn_unknown("user", unknown, f"not in {dataset.source}")
        return known

    def _encode_histories(self, histories: list[list[str]]) -> list[np.ndarray]:
        """Internal ids of each history's known items; one warning names the unknown ones."""
        self._require_module()
        items = self.dataset.items
        encoded, unknown = [], {}
        for row, history in enumerate(histories):
            raw = [str(i) for i in history]
            ids, _ = items.encode_known(raw)
            unknown.update(dict.fromkeys(r for r in raw if r not in items))
            if len(ids) == 0:
                raise DataError(
                    f"history {row + 1}: none of its items is known to the model"
                    + (f": {_named(raw)}" if raw else " (it is empty)")
                )
            encoded.append(ids)
        if unknown:
            _warn_unknown("item", list(unknown), "unknown to the model")
        return encoded

    def _top_items(
        self, sequences: list[np.ndarray], k: int, exclude_history: bool = True
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(internal ids, scores) of the top ``k`` per sequence; fewer where the history
        leaves fewer items to recommend."""
        out = []
        for scores, items in self._ranked(sequences, k, exclude_history):
            for row_scores, row_items in zip(
                scores.cpu().numpy(), items.cpu().numpy(), strict=True
            ):
                finite = np.isfinite(row_scores)
                out.append((row_items[finite], row_scores[finite]))
        return out

    def _ranked(self, sequences: list[np.ndarray], k: int, exclude_history: bool = True):
        cfg = self.config.eval
        return ranked_chunks(
            self._require_module(),
            sequences,
            k,
            self.config.train.device,
            cfg.eval_batch_size,
            cfg.item_chunk_size,
            cfg.posterior_samples,
            exclude_history,
        )

    def _recommendation_frames(
        self, k: int, users: list[str] | None, progress: bool = False
    ) -> Iterator[pd.DataFrame]:
        """The rows of :meth:`recommend_all`, one frame per chunk of users."""
        users = self._known_users(users)
        dataset = self.dataset
        raw_items = np.asarray(dataset.items.raw_ids, dtype=object)
        sequences = [dataset.sequences[dataset.user_position(u)] for u in users]
        done = 0
        with progress_bar(total=len(users), enabled=progress, desc="recommend", unit="user") as bar:
            for scores, items in self._ranked(sequences, k):
                rows, width = scores.shape
                chunk = np.asarray(users[done : done + rows], dtype=object)
                frame = pd.DataFrame(
                    {
                        "user": np.repeat(chunk, width),
                        "rank": np.tile(np.arange(1, width + 1), rows),
                        "item": raw_items[items.cpu().numpy().ravel() - 1],
                        "score": scores.cpu().numpy().ravel().astype(np.float32),
                    }
                )
                done += rows
                bar.update(rows)
                # -inf marks the slots left over where a history covers nearly the catalog.
                yield frame[np.isfinite(frame["score"])].reset_index(drop=True)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, out_dir: str | Path, extra: dict | None = None) -> Path:
        module = self._require_module()
        out = Path(out_dir)
        atomic_torch_save(module.state_dict(), out / MODEL_FILE)
        atomic_write_json(
            {
                "format_version": FORMAT_VERSION,
                "config": self.config.to_dict(),
                "items": self.dataset.items.raw_ids,
                "versions": library_versions(),
                **(extra or {}),
            },
            out / META_FILE,
        )
        return out

    @classmethod
    def load(cls, model_dir: str | Path, **data_overrides) -> SigmaRecommender:
        """A saved model; ``data_overrides`` (e.g. ``path=...``) change which data it is
        evaluated on or recommends for, keeping the model's item vocabulary."""
        model_dir = Path(model_dir)
        meta = read_json(model_dir / META_FILE)
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{model_dir / META_FILE}: format version "
                f"{meta.get('format_version')!r}, expected {FORMAT_VERSION}"
            )
        try:
            config = Config.from_dict(meta["config"], str(model_dir / META_FILE))
            items = ItemVocabulary([str(i) for i in meta["items"]])
        except (KeyError, TypeError) as err:
            raise CheckpointError(f"{model_dir / META_FILE}: missing or malformed {err}") from None
        try:
            check_device(config.train.device)
        except ConfigError:
            # A model trained on a GPU still loads, onto the CPU, where there is none.
            config.train.device = "cpu"
        if data_overrides:
            config.update(nest_overrides(data_overrides), "overrides")
        config.validate()
        rec = cls(config)
        rec.module = SigmaModule(len(items), config.model)
        state = safe_torch_load(model_dir / MODEL_FILE)
        if isinstance(state, dict) and config.model.likelihood == "full":
            # Models saved before the sampled likelihood existed lack its sampler, which a
            # full-softmax model never uses.
            state.setdefault("sampling_log_q", rec.module.sampling_log_q)
        try:
            rec.module.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as err:
            raise CheckpointError(
                f"{model_dir / MODEL_FILE}: weights do not match the "
                f"saved configuration ({str(err).splitlines()[0]})"
            ) from None
        rec.module.to(config.train.device).eval()
        rec.dataset = SequenceDataset([], [], items)
        rec.meta = meta
        rec._history = TrainingHistory.read(model_dir / HISTORY_FILE)
        return rec


def _named(ids: list[str]) -> str:
    """The first few ids, quoted, and how many more there are."""
    named = ", ".join(repr(i) for i in ids[:_NAMED_UNKNOWN])
    return named + (f" and {len(ids) - _NAMED_UNKNOWN} more" if len(ids) > _NAMED_UNKNOWN else "")


def _warn_unknown(noun: str, ids: list[str], where: str) -> None:
    counted = f"{len(ids)} {noun}{'s' if len(ids) > 1 else ''}"
    warnings.warn(f"{counted} {where}, skipped: {_named(ids)}", SigmaPyroWarning, stacklevel=2)
