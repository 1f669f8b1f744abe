"""Pick a reader by ``--format`` or by the file's extension."""

from __future__ import annotations

import inspect
from pathlib import Path

from sigma_pyro.data.interactions import Interactions
from sigma_pyro.data.readers.common import _EXTENSION_FORMATS, FORMATS, _check_file
from sigma_pyro.data.readers.inter import read_inter_file
from sigma_pyro.data.readers.seq import read_sequence_file
from sigma_pyro.data.readers.table import read_table
from sigma_pyro.errors import ConfigError, DataError


def load_interactions(path, format: str | None = None, **table_options) -> Interactions:
    """Read ``path`` in ``format`` (``seq``, ``inter``, ``table``, or inferred from the extension).

    ``table_options`` are the keyword options of :func:`read_table`; ``min_rating`` and
    ``kcore`` apply to every format, the column options only to tables.
    """
    if format is not None and format not in FORMATS:
        raise ConfigError(
            f"--format {format!r}: unknown format; choose one of {', '.join(FORMATS)}"
        )
    path = Path(path)
    _check_file(path)
    if format is None:
        format = _EXTENSION_FORMATS.get(path.suffix.lower())
        if format is None:
            raise DataError(
                f"{path}: cannot tell the format from the extension {path.suffix or '(none)'!r}; "
                f"pass --format ({', '.join(FORMATS)})"
            )
    if format == "table":
        return read_table(path, **table_options)
    _reject_table_only_options(table_options, format)
    reader = read_sequence_file if format == "seq" else read_inter_file
    shared = {key: value for key, value in table_options.items() if key in ("min_rating", "kcore")}
    return reader(path, **shared)


def _reject_table_only_options(options: dict, format: str) -> None:
    # Callers such as the CLI pass every option with its default; only a changed value means
    # the user asked for something this format cannot honour.
    defaults = inspect.signature(read_table).parameters
    for key, value in options.items():
        if key in ("min_rating", "kcore"):
            continue
        if key not in defaults:
            raise TypeError(f"load_interactions() got an unexpected keyword argument {key!r}")
        if value != defaults[key].default:
            raise ConfigError(
                f"option {key}={value!r} only applies to --format table, not {format}"
            )
