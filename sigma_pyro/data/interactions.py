"""The raw, reader-independent form of interaction data."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Interactions:
    """Chronological item sequences keyed by raw user id.

    Ids stay as the strings found in the source so that nothing is lost before remapping;
    ``sequences`` preserves the order users first appear in the file.
    """

    sequences: dict[str, list[str]]
    source: str = "<memory>"
    skipped_users: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_interactions(self) -> int:
        return sum(len(s) for s in self.sequences.values())
