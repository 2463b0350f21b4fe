"""Readers open regular files only and read them with bounds: each row plants one thing in a copy of a finished
run and opens it through one route (a real `runner` subprocess with a timeout, so a hang fails the row).

Each row asserts: exit 2, one line on stderr naming the problem (a listing: the run as an unreadable row), no hang, nothing written where the command was
asked to write, and every byte under the scene (the planted run, a good run, a user's folder) as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fault_rows import SHORT, assert_refused, digest, finished_run, runner  # noqa: E402


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("readers"))


class Scene:
    """runs/good and runs/evil (copies of one finished run), a user's folder, and `out` (where routes write)."""

    def __init__(self, root: Path, run: Path):
        self.root = root
        self.good, self.evil = root / "runs" / "good", root / "runs" / "evil"
        shutil.copytree(run, self.good)
        shutil.copytree(run, self.evil)
        (root / "user").mkdir()
        (root / "user" / "notes.txt").write_text("weeks of work\n")
        self.out = root / "out"

    def fill(self, args: list[str]) -> list[str]:
        return [a.format(evil=self.evil, good=self.good, out=self.out, runs=self.root / "runs") for a in args]

    def replace(self, name: str, make) -> None:
        path = self.evil / name
        path.unlink()
        make(path)


def fifo(name):
    def plant(s: Scene):
        s.replace(name, os.mkfifo)
    plant.__name__ = f"fifo_{name.replace('.hydra/', '').replace('.', '_')}"
    return plant


def device_link(s): s.replace("run.json", lambda p: p.symlink_to("/dev/zero"))
def unix_socket(s): s.replace("run.json", lambda p: socket.socket(socket.AF_UNIX).bind(str(p)))
def sparse_metrics(s): os.truncate(s.evil / "metrics.jsonl", 8 * 1024 ** 3)  # 8 GB of holes, no disk used
def long_metrics_line(s):
    with open(s.evil / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 1, "pad": "' + "x" * 200_000 + '"}\n')
def huge_summary_number(s):
    text = (s.evil / "summary.json").read_text()
    (s.evil / "summary.json").write_text(text.replace('"test_accuracy": ', '"test_accuracy": 1' + "0" * 400 + ', "x": ', 1))
def deep_claim(s):
    info = json.loads((s.evil / "run.json").read_text())
    info["config"]["claims"] = [{"text": "deep", "expect": "-" * 1500 + "1 > 0"}]
    (s.evil / "run.json").write_text(json.dumps(info))
def paren_claim(s):
    info = json.loads((s.evil / "run.json").read_text())
    info["config"]["claims"] = [{"text": "deep", "expect": "(" * 990 + "1" + ")" * 990 + " > 0"}]
    (s.evil / "run.json").write_text(json.dumps(info))


FROM = ["train", "method=finetune", "from={evil}", *SHORT, "paths.output_dir={out}"]
ROUTES = {
    "table": ["table", "{evil}"],
    "ls runs": ["ls", "runs", "{runs}"],  # a listing: the damaged run is a row marked unreadable (issue 31)
    "from": FROM,
    "reproduce": ["reproduce", "{evil}", "--out", "{out}/new"],
    "export": ["export", "{evil}", "--to", "{out}/w.safetensors"],
    "curves": ["table", "{evil}", "--plot-curves", "{out}/curves.png"],
    "html": ["table", "{evil}", "--html", "{out}/page.html"],
}
FIFO_MESSAGE = "is a FIFO, not a regular file"
ROWS = [
    *[(route, fifo("run.json"), FIFO_MESSAGE) for route in ("table", "ls runs", "from", "reproduce", "export")],
    *[(route, fifo("summary.json"), FIFO_MESSAGE) for route in ("table", "ls runs", "reproduce", "export")],
    *[(route, fifo(".hydra/overrides.yaml"), FIFO_MESSAGE) for route in ("table", "ls runs", "reproduce")],
    *[(route, fifo(".hydra/config.yaml"), FIFO_MESSAGE) for route in ("from", "reproduce", "export")],
    ("curves", fifo("metrics.jsonl"), FIFO_MESSAGE),
    ("table", device_link, "is a character device"),
    ("ls runs", unix_socket, "is a socket"),
    ("curves", sparse_metrics, "8589934592 bytes is larger than"),
    ("curves", long_metrics_line, "line 15 is longer than 65536 bytes"),
    ("table", huge_summary_number, "has 401 digits"),
    ("reproduce", huge_summary_number, "has 401 digits"),
    ("html", deep_claim, "nested deeper than 100 levels"),
    ("html", paren_claim, "does not parse"),
]


@pytest.mark.parametrize("route,plant,message", ROWS, ids=[f"{r}-{p.__name__}" for r, p, _ in ROWS])
def test_a_planted_file_is_refused_in_one_line(good_run, tmp_path, route, plant, message):
    scene = Scene(tmp_path, good_run)
    plant(scene)
    before = {name: digest(tmp_path / name) for name in ("runs", "user")}
    args = scene.fill(ROUTES[route])
    result = runner(args, cwd=tmp_path)
    if route == "ls runs":  # one damaged run never takes down a listing: its row says why, the good run is listed
        assert result.returncode == 0, result.stderr[-600:]
        assert "UNREADABLE" in result.stdout and message in result.stdout and "runs/good" in result.stdout
    else:
        assert_refused(result, args[0], contains=message)
    assert {name: digest(tmp_path / name) for name in ("runs", "user")} == before
    assert not scene.out.exists(), f"wrote {sorted(scene.out.rglob('*'))}"


def test_metrics_are_streamed_and_a_torn_last_line_still_reads(good_run, tmp_path):
    """The streaming reader keeps the one rule for a killed run's torn last line and reads the rows before it."""
    from overparam.store.metrics import read_metric_rows

    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    rows = read_metric_rows(run)
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 9, "val')
    again = read_metric_rows(run)
    assert again.torn and not rows.torn and list(again) == list(rows) and len(rows) >= 4
