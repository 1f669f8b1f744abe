"""Id remapping and the leave-one-out split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sigma_pyro.data.interactions import Interactions
from sigma_pyro.errors import DataError

PADDING_ID = 0


class ItemVocabulary:
    """Maps raw item ids (strings) to contiguous internal ids 1..N; 0 is padding.

    A raw id "0" is an ordinary item: it gets whatever internal id its first appearance
    gives it, so it can never be confused with padding.
    """

    def __init__(self, raw_ids: list[str]):
        if len(set(raw_ids)) != len(raw_ids):
            raise DataError("item vocabulary: duplicated raw item ids")
        self.raw_ids = list(raw_ids)
        self._index = {raw: i + 1 for i, raw in enumerate(self.raw_ids)}

    @classmethod
    def from_sequences(cls, sequences) -> ItemVocabulary:
        seen: dict[str, None] = {}
        for seq in sequences:
            for item in seq:
                seen.setdefault(item, None)
        return cls(list(seen))

    def __len__(self) -> int:
        return len(self.raw_ids)

    def __contains__(self, raw: str) -> bool:
        return raw in self._index

    def encode(self, raw_items) -> np.ndarray:
        """Internal ids of known items; unknown raw ids raise ``KeyError``."""
        return np.fromiter((self._index[r] for r in raw_items), dtype=np.int64)

    def encode_known(self, raw_items) -> tuple[np.ndarray, int]:
        """Internal ids of the known items and how many unknown ones were dropped."""
        ids = [self._index[r] for r in raw_items if r in self._index]
        return np.asarray(ids, dtype=np.int64), len(raw_items) - len(ids)

    def decode(self, internal_ids) -> list[str]:
        return [self.raw_ids[int(i) - 1] for i in internal_ids]


@dataclass
class LeaveOneOutSplit:
    """Per user: train on all but the last two items, validate on the second-to-last,
    test on the last. Histories are the items before the target, never including it."""

    train: list[np.ndarray]
    valid_history: list[np.ndarray]
    valid_target: np.ndarray
    test_history: list[np.ndarray]
    test_target: np.ndarray


class SequenceDataset:
    """Users' chronological sequences in internal ids, with the raw-id maps."""

    def __init__(
        self,
        users: list[str],
        sequences: list[np.ndarray],
        items: ItemVocabulary,
        source: str = "<memory>",
    ):
        self.users = users
        self.sequences = sequences
        self.items = items
        self.source = source
        self._user_index = {u: i for i, u in enumerate(users)}

    @classmethod
    def from_interactions(
        cls, interactions: Interactions, items: ItemVocabulary | None = None
    ) -> tuple[SequenceDataset, dict]:
        """Encode raw sequences. With a given vocabulary (a trained model's), items it has
        never seen are dropped and counted instead of being mis-mapped; the report says how
        many histories were affected."""
        report = {
            "users": interactions.num_users,
            "unknown_items": 0,
            "users_changed": 0,
            "users_dropped": 0,
            "users_too_short": 0,
        }
        if items is None:
            items = ItemVocabulary.from_sequences(interactions.sequences.values())
        users, sequences = [], []
        for user, raw in interactions.sequences.items():
            ids, unknown = items.encode_known(raw)
            if unknown:
                report["unknown_items"] += unknown
                report["users_changed"] += 1
            if len(ids) == 0:
                report["users_dropped"] += 1
                continue
            # Kept for recommendation, but leave-one-out cannot evaluate them.
            report["users_too_short"] += int(len(ids) < 3)
            users.append(user)
            sequences.append(ids)
        if not users:
            raise DataError(f"{interactions.source}: no user has an item known to the model")
        return cls(users, sequences, items, interactions.source), report

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_users(self) -> int:
        return len(self.users)

    def has_user(self, raw_user: str) -> bool:
        return raw_user in self._user_index

    def user_position(self, raw_user: str) -> int:
        try:
            return self._user_index[raw_user]
        except KeyError:
            raise DataError(f"{self.source}: unknown user id {raw_user!r}") from None

    def leave_one_out(self, skip_short: bool = False) -> LeaveOneOutSplit:
        """With ``skip_short``, users with fewer than 3 items are left out instead of raising
        DataError (``from_interactions`` reports how many)."""
        seqs = [s for s in self.sequences if len(s) >= 3]
        if not skip_short and len(seqs) < len(self.sequences):
            short = next(u for u, s in zip(self.users, self.sequences, strict=True) if len(s) < 3)
            raise DataError(
                f"{self.source}: user {short!r} has fewer than 3 items; "
                "leave-one-out needs 3 (readers skip such users)"
            )
        if not seqs:
            raise DataError(
                f"{self.source}: no user has at least 3 (known) items; leave-one-out needs 3"
            )
        return LeaveOneOutSplit(
            train=[s[:-2] for s in seqs],
            valid_history=[s[:-2] for s in seqs],
            valid_target=np.array([s[-2] for s in seqs], dtype=np.int64),
            test_history=[s[:-1] for s in seqs],
            test_target=np.array([s[-1] for s in seqs], dtype=np.int64),
        )
