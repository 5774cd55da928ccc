"""Files: written whole or not at all, and the one reader of JSON / JSONL input files.

Several processes may share a cache directory (two workers on one run, one per GPU): each writes its own
temporary file, and the rename makes the finished file appear in one step, so no reader ever sees half of
one and no writer removes another's temporary file. Temporary files and directories are created with the
usual mode (the process's umask applies, as for any file; the umask itself is never changed).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import AnyEditError, RequestError


def _fresh(parent: str | Path, prefix: str, suffix: str, make: Callable[[Path], None]) -> Path:
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = parent / f"{prefix}{os.getpid()}-{secrets.token_hex(6)}{suffix}"
        try:
            make(path)  # fails if the name exists
            return path
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue


def fresh_file(parent: str | Path, prefix: str, suffix: str) -> Path:
    """A new empty file in ``parent`` (created if needed) under a name no other process uses."""
    return _fresh(parent, prefix, suffix, lambda p: os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)))


def fresh_dir(parent: str | Path, prefix: str, suffix: str) -> Path:
    """A new empty directory in ``parent`` (created if needed) under a name no other process uses."""
    return _fresh(parent, prefix, suffix, lambda p: p.mkdir(0o777))


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; when the block ends without error it becomes ``path``
    (atomically), otherwise it is removed."""
    path = Path(path)
    tmp = fresh_file(path.parent, f".{path.name}.", ".partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """``path.write_text(text)``, atomically."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_records(path: str | Path, what: str = "file", error: type[AnyEditError] = RequestError) -> list[Any]:
    """The records of a JSON or JSONL file: a JSON list (an object alone counts as a list of one), or one JSON
    value per non-empty line. A missing file, invalid JSON or no records is one ``error`` naming ``what`` (e.g.
    "dataset file") and the file."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as whole:
        try:
            data = list(_jsonl(text.splitlines(), path, what, error))
        except _FirstLine:  # not JSONL either: the error of the file read as one JSON document is the clearer one
            raise error(f"{what} {path} is not valid JSON: neither a JSON list nor JSONL ({whole})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise error(f"{what} {path} holds no records (expected a non-empty JSON list or JSONL)")
    return data


class _FirstLine(Exception):
    """The first record line of a file is not JSON (so the file is not JSONL at all)."""


def _jsonl(lines: Iterable[str], path: Path, what: str, error: type[AnyEditError]) -> Iterator[Any]:
    first = True
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as e:
            if first:
                raise _FirstLine from None
            raise error(f"{what} {path}, line {i}: not valid JSON ({e})") from None
        first = False


def iter_jsonl(path: str | Path, what: str = "file", error: type[AnyEditError] = RequestError) -> Iterator[Any]:
    """The records of a JSONL file, read line by line (a large corpus is never held whole); errors as
    :func:`read_records`."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    with path.open(encoding="utf-8") as f:
        try:
            yield from _jsonl(f, path, what, error)
        except _FirstLine:
            raise error(f"{what} {path}, line 1: not valid JSON") from None
