"""Saving and loading models without ever unpickling arbitrary objects.

A model folder holds ``model.pt`` (tensors only, read with ``weights_only=True``),
``model.json`` (format version, configuration, raw item ids, library versions, best
validation metrics) and, while training, ``last.pt`` (optimizer and RNG state for resuming).
Every file is written to a temporary file in the same folder, fsynced and renamed, so a
crash leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from sigma_pyro.errors import CheckpointError

FORMAT_VERSION = 1
MODEL_FILE = "model.pt"
META_FILE = "model.json"
STATE_FILE = "last.pt"


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to write, fsynced and renamed onto
    ``path`` when the block succeeds and removed when it fails: readers of ``path`` see the
    old file or the complete new one. Failures to write are one-line CheckpointErrors."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot write ({err.strerror or err})") from None
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"{path}: cannot write ({err.strerror or err}); the previous file is unchanged"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_torch_save(obj, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_json(obj, path: Path) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def safe_torch_load(path: Path, map_location="cpu"):
    """``torch.load`` restricted to tensors and plain containers, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means the file can't be trusted
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            reason = "it contains pickled objects other than tensors, refusing to load them"
        raise CheckpointError(
            f"{path}: not a valid sigma-pyro checkpoint ({reason[:200]})"
        ) from None


def read_json(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file (is this a sigma-pyro model folder?)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: corrupted model metadata ({err})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupted model metadata (not a JSON object)")
    return meta


def library_versions() -> dict[str, str]:
    import pyro

    import sigma_pyro

    # str(): torch.__version__ is a TorchVersion, which weights_only loading refuses.
    return {
        "sigma_pyro": sigma_pyro.__version__,
        "torch": str(torch.__version__),
        "pyro": str(pyro.__version__),
    }
