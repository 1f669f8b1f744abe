"""Mini-batches with dynamic padding.

Sequences are right-padded to the longest one in the batch (capped at ``max_length``,
keeping the most recent items). Right padding plus causal attention means a real position
never attends to padding, and positions count from the start of the kept window, so the
input at position t never depends on anything after t.

Two kinds of training sample (``train.training_samples``) hold the same targets:

- ``sequences``: a row is a whole training sequence, scored at every real position;
- ``prefixes``: a row is one prefix of a training sequence, scored at its last position
  only (the samples of SASRec-family code such as BSARec). A step then holds targets from
  as many users as it has rows, and every target gets its own dropout draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sigma_pyro.config.checks import TRAINING_SAMPLES
from sigma_pyro.data.dataset import PADDING_ID


@dataclass
class SequenceBatch:
    """``items[b, t]`` is the t-th input item, ``targets[b, t]`` the item that follows it
    where that position is scored (PADDING_ID where it is not: padding, and the earlier
    positions of a prefix sample)."""

    items: torch.Tensor  # [B, L] long
    targets: torch.Tensor  # [B, L] long, PADDING_ID where nothing is scored
    mask: torch.Tensor  # [B, L] bool, True at real positions
    index: torch.Tensor  # [B] long, row of each sequence in the source list

    @property
    def num_tokens(self) -> int:
        """Real positions: each has a z, scored or not."""
        return int(self.mask.sum())

    @property
    def scored(self) -> torch.Tensor:
        """[B, L] bool, True at the positions whose next item is scored."""
        return self.mask & (self.targets != PADDING_ID)

    @property
    def num_targets(self) -> int:
        return int(self.scored.sum())

    def shard(self, rank: int, size: int) -> SequenceBatch | None:
        """Rank ``rank``'s share of the batch among ``size`` ranks: every size-th sequence
        (so each share has a similar length mix), trimmed to its own longest sequence;
        None when the batch has fewer sequences than ``rank + 1``."""
        if size == 1:
            return self
        rows = torch.arange(rank, self.items.shape[0], size)
        if rows.numel() == 0:
            return None
        mask = self.mask[rows]
        width = max(1, int(mask.sum(dim=1).max()))
        return SequenceBatch(
            self.items[rows, :width],
            self.targets[rows, :width],
            mask[:, :width],
            self.index[rows],
        )

    def to(self, device) -> SequenceBatch:
        return SequenceBatch(
            self.items.to(device),
            self.targets.to(device),
            self.mask.to(device),
            self.index.to(device),
        )


def pad_right(sequences: list[np.ndarray], max_length: int) -> torch.Tensor:
    """Right-pad the last ``max_length`` items of each sequence to a [B, L] tensor."""
    kept = [s[-max_length:] for s in sequences]
    width = max(1, max(len(s) for s in kept))
    out = np.full((len(kept), width), PADDING_ID, dtype=np.int64)
    for row, seq in enumerate(kept):
        out[row, : len(seq)] = seq
    return torch.from_numpy(out)


class TrainingBatches:
    """Every prefix of every training sequence predicts its next item: all of a sequence's
    prefixes in one row (``samples="sequences"``), or each prefix in a row of its own
    (``samples="prefixes"``).

    The shuffle of epoch e is drawn from a generator seeded with (seed, e), so an epoch's
    batches are identical whether or not training was interrupted and resumed before it.
    Sequences are grouped into batches of similar length (within a shuffled pool of
    ``batch_size * pool_batches`` sequences) so that dynamic padding wastes little. With
    ``max_tokens`` a batch also stops growing before its scored positions exceed that many:
    the full-softmax logits are [scored positions x items], so this bounds peak memory for
    the batches of longest sequences without shrinking the others (a prefix sample scores
    one position, so there the cap counts rows).
    """

    def __init__(
        self,
        train_sequences: list[np.ndarray],
        batch_size: int,
        max_length: int,
        seed: int = 0,
        shuffle: bool = True,
        pool_batches: int = 50,
        max_tokens: int = 0,
        samples: str = "sequences",
    ):
        if samples not in TRAINING_SAMPLES:
            raise ValueError(f"samples must be one of {TRAINING_SAMPLES}, got {samples!r}")
        # A sequence of one item has no next item to predict.
        self.rows = np.array(
            [i for i, s in enumerate(train_sequences) if len(s) >= 2], dtype=np.int64
        )
        self.sequences = train_sequences
        # A prefix sample is (row, end): the inputs sequence[:end], the target sequence[end].
        self.prefixes = (
            np.array(
                [(r, end) for r in self.rows for end in range(1, len(train_sequences[r]))],
                dtype=np.int64,
            ).reshape(-1, 2)
            if samples == "prefixes"
            else None
        )
        self.batch_size = batch_size
        self.max_length = max_length
        self.seed = seed
        self.shuffle = shuffle
        self.pool = batch_size * pool_batches
        self.max_tokens = max_tokens
        self.epoch = 0
        self._num_batches = len(self._order())

    @classmethod
    def for_training(cls, train_sequences: list[np.ndarray], config) -> TrainingBatches:
        """The batches training uses under ``config`` (a :class:`sigma_pyro.config.Config`)."""
        return cls(
            train_sequences,
            config.train.batch_size,
            config.model.max_seq_length,
            seed=config.train.seed,
            max_tokens=config.train.max_batch_tokens,
            samples=config.train.training_samples,
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        # Token-capped batching can change the count from epoch to epoch; this is epoch 0's.
        return self._num_batches

    def _split(self, rows: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        if self.max_tokens <= 0:
            return [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        batches, start, tokens = [], 0, 0
        for i, length in enumerate(lengths):
            if i > start and (i - start == self.batch_size or tokens + length > self.max_tokens):
                batches.append(rows[start:i])
                start, tokens = i, 0
            tokens += length
        if start < len(rows):
            batches.append(rows[start:])
        return batches

    def _samples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each sample's number, its input length (which batches are grouped by), and its
        scored positions (which the token cap counts)."""
        if self.prefixes is not None:
            lengths = np.minimum(self.prefixes[:, 1], self.max_length)
            return np.arange(len(self.prefixes)), lengths, np.ones_like(lengths)
        lengths = np.array(
            [min(len(self.sequences[r]) - 1, self.max_length) for r in self.rows], dtype=np.int64
        )
        return self.rows, lengths, lengths

    def _order(self) -> list[np.ndarray]:
        rows, lengths, scored = self._samples()
        if not self.shuffle:
            return self._split(rows, scored)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(rows))
        rows, lengths, scored = rows[order], lengths[order], scored[order]
        batches = []
        for start in range(0, len(rows), self.pool):
            by_length = np.argsort(lengths[start : start + self.pool], kind="stable")
            batches += self._split(
                rows[start : start + self.pool][by_length],
                scored[start : start + self.pool][by_length],
            )
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self):
        for rows in self._order():
            if self.prefixes is None:
                seqs = [self.sequences[r] for r in rows]
                items = pad_right([s[:-1] for s in seqs], self.max_length)
                targets = pad_right([s[1:] for s in seqs], self.max_length)
                yield SequenceBatch(items, targets, items != PADDING_ID, torch.from_numpy(rows))
                continue
            samples = self.prefixes[rows]
            items = pad_right([self.sequences[r][:end] for r, end in samples], self.max_length)
            mask = items != PADDING_ID
            targets = torch.full_like(items, PADDING_ID)
            last = mask.sum(dim=1) - 1
            targets[torch.arange(len(samples)), last] = torch.as_tensor(
                [int(self.sequences[r][end]) for r, end in samples]
            )
            yield SequenceBatch(items, targets, mask, torch.from_numpy(samples[:, 0].copy()))
