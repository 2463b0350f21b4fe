"""produce_once: concurrent jobs needing the same artifact build it once and all reuse it."""

import subprocess
import sys
import textwrap

import pytest

from overparam.store.cache import produce_once

WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from overparam.store.cache import produce_once

    target, log = Path(sys.argv[1]), Path(sys.argv[2])
    def build(tmp):
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\\n")
        tmp.mkdir()
        (tmp / "model.safetensors").write_bytes(b"weights")
        time.sleep(1.0)   # a slow build: the other jobs arrive while it runs
        (tmp / "summary.json").write_text('{"level": 3}')
    path = produce_once(target, build)
    print((path / "summary.json").read_text())
""")


def test_four_concurrent_jobs_needing_the_same_level_build_it_once(tmp_path):
    target, log = tmp_path / "level_3", tmp_path / "builds.log"
    jobs = [subprocess.Popen([sys.executable, "-c", WORKER, str(target), str(log)], stdout=subprocess.PIPE, text=True)
            for _ in range(4)]
    outputs = [job.communicate(timeout=60)[0].strip() for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0, 0, 0]
    assert len(log.read_text().split()) == 1, "the level was built more than once"
    assert outputs == ['{"level": 3}'] * 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [".level_3.lock", "builds.log", "level_3"]


def test_a_failed_build_leaves_nothing_and_the_next_caller_builds_again(tmp_path):
    target = tmp_path / "teacher.safetensors"

    def failing(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("killed half-way")

    with pytest.raises(RuntimeError):
        produce_once(target, failing)
    assert not target.exists() and not list(tmp_path.glob(".teacher.safetensors.building-*"))
    calls = []
    produce_once(target, lambda tmp: (calls.append(1), tmp.write_bytes(b"whole")))
    produce_once(target, lambda tmp: calls.append(2))
    assert target.read_bytes() == b"whole" and calls == [1]


def test_debris_of_a_killed_builder_is_removed_before_building(tmp_path):
    target = tmp_path / "level_1"
    debris = tmp_path / ".level_1.building-99999"
    debris.mkdir()
    (debris / "model.safetensors").write_bytes(b"torn")
    produce_once(target, lambda tmp: tmp.mkdir())
    assert target.is_dir() and not debris.exists()
