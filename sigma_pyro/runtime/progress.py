"""Progress bars for people watching a terminal, and nothing for logs.

A tqdm bar redraws itself with carriage returns, which turn a redirected log
(``make demo > log 2>&1``) into one unreadable line per refresh; where stderr is not a
terminal the callers' one line per unit of work is the record instead.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(iterable=None, enabled: bool = True, **options) -> tqdm:
    """A tqdm bar on stderr, shown only when ``enabled`` and stderr is a terminal."""
    shown = enabled and sys.stderr.isatty()
    return tqdm(iterable, disable=not shown, file=sys.stderr, **options)
