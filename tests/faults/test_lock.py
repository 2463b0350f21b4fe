"""The run dir's lock in one process: flock on the directory, a `.lock` file where a filesystem refuses that."""

from __future__ import annotations

import errno
import fcntl
import os

import pytest

from overparam.errors import UserError
from overparam.store import lifecycle
from overparam.store.lifecycle import RunLife, holder_pid

CONFIG = {"seed": 0, "method": {"name": "dense"}}


def other_holder_blocks(path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_the_directory_itself_is_locked_and_its_holder_named(tmp_path):
    with RunLife(tmp_path / "run", CONFIG) as life:
        assert other_holder_blocks(tmp_path / "run")
        assert holder_pid(life.fd) == os.getpid()
        assert os.listdir(tmp_path / "run") == []  # the lock wrote nothing
    assert not other_holder_blocks(tmp_path / "run")


def test_a_filesystem_without_directory_locks_gets_a_lock_file(tmp_path, monkeypatch):
    real = fcntl.flock

    def nfs_like(fd, operation):
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EBADF, "Bad file descriptor")
        return real(fd, operation)

    monkeypatch.setattr(lifecycle.fcntl, "flock", nfs_like)
    run = tmp_path / "run"
    life = RunLife(run, CONFIG, created=[run])
    with life:
        assert other_holder_blocks(run / ".lock")
        assert holder_pid(life.fd) == os.getpid()
        life.before = set()
        life.refuse()  # a refused run in a directory it created leaves nothing
    assert not run.exists()


def test_another_config_in_the_directory_is_refused_before_anything_is_written(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"config_hash": "0123456789abcdef", "status": "done"}')
    with RunLife(run, CONFIG) as life, pytest.raises(UserError, match="holds a run with another config"):
        life.check()
    assert os.listdir(run) == ["run.json"]
