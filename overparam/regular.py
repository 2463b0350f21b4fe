"""Reading a file that may have been planted: regular files only, never blocking, never unbounded.

A run directory or a cache from elsewhere may hold a FIFO, a device or a socket where run.json
should be: opening a FIFO for reading blocks until a writer comes, and its size (0) passes any size
check. Every reader of such files opens them here: the path is lstat'ed (a special file is refused
without being opened), opened with O_NONBLOCK (a FIFO swapped in meanwhile does not block), and the
open descriptor is fstat'ed (what was opened is what is read). Torch-free: the listings use it.
"""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from overparam.errors import UserError

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _refuse(path: Path, mode: int) -> UserError:
    return UserError(f"{path}: is {_kind(mode)}, not a regular file; refusing to read it")


@contextmanager
def open_regular(path: str | os.PathLike) -> Iterator[tuple[int, os.stat_result] | None]:
    """(descriptor, its fstat) of the regular file at `path`, or None when nothing is there; UserError for
    anything else (a FIFO, a device, a socket, a directory, an unreadable file). Closed on exit."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # follows a link: a link to a FIFO is refused like the FIFO
    except (FileNotFoundError, NotADirectoryError):
        yield None
        return
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise _refuse(path, mode)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        yield None
        return
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):  # swapped between the stat and the open
            raise _refuse(path, status.st_mode)
        os.set_blocking(fd, True)
        yield fd, status
    finally:
        os.close(fd)


def read_regular(path: str | os.PathLike, limit: int) -> bytes | None:
    """The bytes of the regular file at `path` (None when absent), refused when larger than `limit`."""
    with open_regular(path) as opened:
        if opened is None:
            return None
        fd, status = opened
        if status.st_size > limit:
            raise UserError(f"{path}: {status.st_size} bytes is larger than this file may be ({limit} bytes); "
                            f"refusing to read it")
        chunks, total = [], 0
        try:
            while total <= limit:
                chunk = os.read(fd, min(1 << 20, limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        except OSError as exc:
            raise UserError(f"{path}: cannot read ({exc.strerror})") from None
        if total > limit:  # grew while being read
            raise UserError(f"{path}: larger than this file may be ({limit} bytes); refusing to read it")
        return b"".join(chunks)


def read_text(path: str | os.PathLike, limit: int) -> str | None:
    """A regular file's UTF-8 text (None when absent), at most `limit` bytes."""
    data = read_regular(path, limit)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


# Integers a run writes (steps, counts, seeds, byte sizes) fit in 64 bits; a longer one is no run's number.
MAX_INT_DIGITS = 19


def json_int(text: str) -> int:
    """`json.loads(..., parse_int=json_int)`: an integer of at most MAX_INT_DIGITS digits (ValueError beyond)."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"the integer {text[:20]}... has {len(text.lstrip('-'))} digits")
    return int(text)


def read_lines(path: str | os.PathLike, *, max_line: int, max_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """(number, line without its newline, ended by a newline) of a regular file, streamed in blocks; a line
    longer than `max_line` or a file larger than `max_bytes` is refused (UserError) before it is held whole."""
    with open_regular(path) as opened:
        if opened is None:
            return
        fd, status = opened
        if status.st_size > max_bytes:
            raise UserError(f"{path}: {status.st_size} bytes is larger than this file may be ({max_bytes} bytes); "
                            f"refusing to read it")
        pending, number, total = b"", 0, 0
        while True:
            try:
                block = os.read(fd, 1 << 20)
            except OSError as exc:
                raise UserError(f"{path}: cannot read ({exc.strerror})") from None
            total += len(block)
            if total > max_bytes:
                raise UserError(f"{path}: larger than this file may be ({max_bytes} bytes); refusing to read it")
            if not block:
                break
            pending += block
            *lines, pending = pending.split(b"\n")
            for line in lines:
                number += 1
                if len(line) > max_line:
                    raise UserError(f"{path}: line {number} is longer than {max_line} bytes; refusing to read it")
                yield number, line, True
            if len(pending) > max_line:
                raise UserError(f"{path}: line {number + 1} is longer than {max_line} bytes; refusing to read it")
        if pending:
            yield number + 1, pending, False
