"""Recommendations in raw ids: histories and users of raw ids in, top-k items and tables of
them out, with one warning naming what is unknown."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd

from sigma_pyro.config import Config
from sigma_pyro.data.dataset import ItemVocabulary, SequenceDataset
from sigma_pyro.errors import DataError, SigmaPyroWarning
from sigma_pyro.evaluation.explain import explain_items, require_interests
from sigma_pyro.evaluation.predict import ranked_chunks
from sigma_pyro.runtime.progress import progress_bar

# Unknown ids named in a warning or error; the rest are counted.
_NAMED_UNKNOWN = 5


def known_users(dataset: SequenceDataset, users: list[str] | None) -> list[str]:
    """The users of ``dataset`` among ``users`` (all of them for None); one warning names
    the unknown ones."""
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


def recommend_histories(
    module,
    items: ItemVocabulary,
    histories: list[list[str]],
    k: int,
    config: Config,
    exclude_history: bool = True,
) -> list[list[tuple[str, float]]]:
    """Top-``k`` (raw item id, score) for each history of raw item ids: unknown items are
    skipped with one warning, a history with none known is a DataError."""
    encoded = _encode_histories(items, histories)
    return [
        list(zip(items.decode(ids), scores.tolist(), strict=True))
        for ids, scores in _top_items(module, encoded, k, config, exclude_history)
    ]


def explain_histories(
    module,
    items: ItemVocabulary,
    histories: list[list[str]],
    k: int,
    config: Config,
) -> list[list[dict]]:
    """:func:`recommend_histories` with, per item, the interest that puts it forward (see
    :func:`~sigma_pyro.evaluation.explain.explain_items`), in raw ids."""
    require_interests(module)
    encoded = _encode_histories(items, histories)
    ranked = _top_items(module, encoded, k, config)
    explanations = explain_items(module, encoded, [ids for ids, _ in ranked], config.train.device)
    return [
        [
            {
                "item": item,
                "score": score,
                "interest": why.interest,
                "intensity": why.intensity,
                "history": items.decode(why.history),
            }
            for item, score, why in zip(items.decode(ids), scores.tolist(), row, strict=True)
        ]
        for (ids, scores), row in zip(ranked, explanations, strict=True)
    ]


def recommendation_frames(
    module,
    dataset: SequenceDataset,
    users: list[str],
    k: int,
    config: Config,
    progress: bool = False,
) -> Iterator[pd.DataFrame]:
    """Columns user, rank, item, score (raw ids) for the known ``users``, ``k`` rows each
    with the history excluded, one frame per chunk of users."""
    raw_items = np.asarray(dataset.items.raw_ids, dtype=object)
    sequences = [dataset.sequences[dataset.user_position(u)] for u in users]
    done = 0
    with progress_bar(total=len(users), enabled=progress, desc="recommend", unit="user") as bar:
        for scores, items in _ranked(module, sequences, k, config):
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


def _encode_histories(items: ItemVocabulary, histories: list[list[str]]) -> list[np.ndarray]:
    """Internal ids of each history's known items; one warning names the unknown ones."""
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
    module,
    sequences: list[np.ndarray],
    k: int,
    config: Config,
    exclude_history: bool = True,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(internal ids, scores) of the top ``k`` per sequence; fewer where the history
    leaves fewer items to recommend."""
    out = []
    for scores, items in _ranked(module, sequences, k, config, exclude_history):
        for row_scores, row_items in zip(scores.cpu().numpy(), items.cpu().numpy(), strict=True):
            finite = np.isfinite(row_scores)
            out.append((row_items[finite], row_scores[finite]))
    return out


def _ranked(
    module,
    sequences: list[np.ndarray],
    k: int,
    config: Config,
    exclude_history: bool = True,
):
    cfg = config.eval
    return ranked_chunks(
        module,
        sequences,
        k,
        config.train.device,
        cfg.eval_batch_size,
        cfg.item_chunk_size,
        cfg.posterior_samples,
        exclude_history,
    )


def _named(ids: list[str]) -> str:
    """The first few ids, quoted, and how many more there are."""
    named = ", ".join(repr(i) for i in ids[:_NAMED_UNKNOWN])
    return named + (f" and {len(ids) - _NAMED_UNKNOWN} more" if len(ids) > _NAMED_UNKNOWN else "")


def _warn_unknown(noun: str, ids: list[str], where: str) -> None:
    counted = f"{len(ids)} {noun}{'s' if len(ids) > 1 else ''}"
    warnings.warn(f"{counted} {where}, skipped: {_named(ids)}", SigmaPyroWarning, stacklevel=2)
