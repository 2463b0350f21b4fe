"""A run directory's life, route by route: a refused command leaves every byte as it was, a finished run's
command changes nothing, a second process never writes into a run another one holds.

Each row of ROUTES is one command run as a user would (a subprocess with a timeout). It asserts the exit
code, the one line on stderr (none for a command that succeeds), and that every file of the scene (a
planted user folder, a finished run, the working folder) outside the directories the command was asked
to create is byte-identical afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from faults_helpers import TINY, Scene, digest, lines, runner, status_of


@dataclass
class Route:
    name: str
    args: Callable[[Scene], list[str]]
    code: int
    stderr: str | None  # the one line's pattern; None: nothing on stderr
    cwd: Callable[[Scene], Path] = lambda s: s.root
    creates: Callable[[Scene], list[Path]] = lambda s: []  # folders the command was asked to create
    gone: Callable[[Scene], list[Path]] = lambda s: []  # paths that must not exist afterwards
    stdout: str | None = None
    after: Callable[[Scene], None] | None = field(default=None)


MISSING_DATA = r"dataset cifar10: python batches .* not found under "


def no_data(s: Scene, run_dir: str) -> list[str]:
    return ["train", "dataset=cifar10", f"paths.data_dir={s.empty}", f"hydra.run.dir={run_dir}"]


ROUTES = [
    # A bad input found only at run time (missing data): before, the run dir was rmtree'd with its parent.
    Route("run_time_error_into_a_user_folder", lambda s: no_data(s, str(s.user)), 2, MISSING_DATA),
    Route("run_time_error_into_the_working_folder", lambda s: no_data(s, "."), 2, MISSING_DATA,
          cwd=lambda s: s.user),
    Route("run_time_error_into_new_folders", lambda s: no_data(s, str(s.root / "new" / "deep" / "run")), 2,
          MISSING_DATA, gone=lambda s: [s.root / "new"]),
    Route("run_time_error_into_the_default_output_dir",
          lambda s: ["train", "dataset=cifar10", f"paths.data_dir={s.empty}", f"paths.output_dir={s.root}/outs"], 2,
          MISSING_DATA, gone=lambda s: [s.root / "outs"]),
    Route("run_time_error_into_a_finished_run", lambda s: no_data(s, str(s.finished)), 2, r"another config"),
    # Before, Hydra rewrote the finished run's .hydra files and then the run was refused.
    Route("another_config_into_a_finished_run", lambda s: ["train", *TINY, "seed=2", f"hydra.run.dir={s.finished}"],
          2, r"holds a run with another config .*choose another hydra.run.dir"),
    # Before, Hydra wrote its files into the finished run before the runner's checks refused the command.
    Route("output_subdir_into_a_finished_run", lambda s: ["train", *TINY, "seed=2", "hydra.output_subdir=.hydra",
                                                         f"hydra.run.dir={s.finished}"],
          2, r"hydra.output_subdir cannot be set"),
    # Before, the command trained again and appended a second copy of every metrics row.
    Route("a_finished_run_again", lambda s: ["train", *TINY, f"hydra.run.dir={s.finished}"], 0, None,
          stdout=r"already done .*test_accuracy="),
    Route("a_finished_run_again_from_inside", lambda s: ["train", *TINY, "hydra.run.dir=."], 0, None,
          cwd=lambda s: s.finished, stdout=r"already done"),
    # Before, PyTorch's thread pool crashed the process (a segfault) and the run stayed `running`.
    Route("threads_beyond_the_cores", lambda s: ["train", *TINY, "hardware.threads=100000",
                                                 f"hydra.run.dir={s.root / 'many'}"], 2,
          r"hardware.threads=100000 is more than this machine's \d+ CPUs", gone=lambda s: [s.root / "many"]),
    Route("run_dir_is_a_file", lambda s: ["train", *TINY, f"hydra.run.dir={s.user / 'data.csv'}"], 2,
          r"exists and is not a directory"),
    Route("a_fresh_run_into_a_user_folder", lambda s: ["train", *TINY, f"hydra.run.dir={s.user}"], 0, None,
          stdout=r"(^|\n)done ", after=lambda s: check_adopted(s)),
]


def check_adopted(s: Scene) -> None:
    """The user's files are untouched beside the run's own."""
    assert status_of(s.user) == "done"
    assert (s.user / "notes" / "week1.md").read_text() == "weeks of work\n"


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_route(route: Route, scene: Scene):
    args, cwd = route.args(scene), route.cwd(scene)
    before = digest(scene.root)
    done = runner(args, cwd=cwd)
    assert done.returncode == route.code, done.stderr[-3000:]
    err = lines(done.stderr)
    if route.stderr is None:
        assert err == [], done.stderr
    else:
        assert len(err) == 1 and re.search(route.stderr, err[0]), done.stderr
        assert "Traceback" not in done.stderr
    if route.stdout:
        assert re.search(route.stdout, done.stdout, re.S), done.stdout
    for path in route.gone(scene):
        assert not path.exists(), f"{path} was left behind"
    after = digest(scene.root)
    if route.after is None:
        assert after == before
    else:  # a run that succeeds adds its own files; every file that was there is as it was
        assert {k: v for k, v in after.items() if k in before} == before
        route.after(scene)
