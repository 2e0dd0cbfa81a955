"""Reading files that a process or an operator names, without being hurt by them.

- `read_at_most` reads no more than a given number of bytes, whatever the file is: a
  `.proc` file, a `--message @file` or `--input @file` given on the command line may be a
  pipe or a device, and `/dev/zero` must not take the machine's memory.
- `read_json_argument` reads `--input`, `--message` and the like: JSON text or `@file`,
  strictly and within its limit.
- `confined_loader` is how a process reads the files it names (`input from "..."`,
  `call ... from "..."`): only regular files inside the folder of the process that was
  loaded (no absolute paths or `../` out of it, no symlink that leads out, no device, pipe or
  folder), of at most `file_bytes`. A refusal is a `FileRefused` that says why.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procflow import strict_json
from procflow.errors import FileRefused, ProcflowError
from procflow.limits import FILE_BYTES, Limit
from procflow.strict_json import limit_text

__all__ = ["confined_loader", "read_at_most", "read_confined", "read_json_argument"]

_CHUNK = 1 << 16


def _read_fd(fd: int, most: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < most:
        chunk = os.read(fd, min(_CHUNK, most - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def read_at_most(path: str | Path, most: int) -> bytes:
    """The first `most` bytes of a file (all of it when it is shorter). OSError when it cannot be read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise IsADirectoryError(21, "Is a directory", str(path))
        return _read_fd(fd, most)
    finally:
        os.close(fd)


def confined_loader(process_path: str | Path, limit: Limit = FILE_BYTES) -> Callable[[str], bytes]:
    """The loader of a process read from `process_path`: it reads the files the process names,
    confined to the folder of that file (see the module docstring)."""
    folder = Path(process_path).parent

    def load(path: str) -> bytes:
        return read_confined(path, folder, limit)

    return load


def read_confined(path: str | Path, folder: Path, limit: Limit = FILE_BYTES) -> bytes:
    """A regular file inside `folder` (after following every symlink), of at most `limit` bytes.
    `FileRefused` when it is outside, not a regular file or too large; FileNotFoundError (an
    OSError) when there is no such file."""
    root = folder.resolve()
    target = Path(path)
    resolved = target.resolve()
    if not resolved.is_relative_to(root):
        raise FileRefused(
            f"{path} is outside the folder of the process ({root}), or a link out of it: "
            "a process reads only files inside its own folder"
        )
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(resolved, flags)  # non-blocking: opening a named pipe must not wait for a writer
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(f"{path} is not a regular file (a device, a pipe or a folder): a process reads only regular files")
        if info.st_size > limit.value:
            raise FileRefused(f"{path} is {info.st_size:,} bytes, larger than {limit_text(limit)}")
        data = _read_fd(fd, limit.value + 1)
    finally:
        os.close(fd)
    if len(data) > limit.value:  # it grew while it was read
        raise FileRefused(f"{path} is larger than {limit_text(limit)}")
    return data


def read_json_argument(value: str, what: str, limit: Limit, refuse: type[ProcflowError]) -> Any:
    """A command-line argument that holds JSON text, or `@file` naming a file that does: read
    strictly (`procflow.strict_json`) within `limit`; `refuse(reason)` when it cannot be."""
    if not value.startswith("@"):
        return strict_json.loads(value, what=what, limit=limit, refuse=refuse)
    path = value[1:]
    try:
        data = read_at_most(path, limit.value + 1)
    except OSError as error:
        raise refuse(f"cannot read the {what} file {path}: {error.strerror or error}") from None
    return strict_json.loads(data, what=f"the {what} file {path}", limit=limit, refuse=refuse)
