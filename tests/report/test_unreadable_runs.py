"""One damaged run never takes down a listing: it is a row marked unreadable, with the reason, in no aggregate.

Each damage (a row of DAMAGES) is checked through `runner ls runs`, `runner table` (markdown and the HTML
page) and `runner table --claims`; `runner cache ls` and `runner search` are checked in tests/cli.
"""

from __future__ import annotations

import os
import time

import pytest
from report_helpers import base_config, make_run, method_config

from overparam.cli.main import main as runner

# (what happened to the file, file, bytes written, the reason the listing gives)
DAMAGES = [
    ("run.json cut short by a full disk", "run.json", b'{"status": "do',
     "run.json: not valid JSON (Unterminated string starting at at line 1)"),
    ("run.json not UTF-8", "run.json", b"{\xff\xfe", "run.json is not UTF-8 text (invalid start byte at byte 1)"),
    ("summary.json garbage", "summary.json", b"garbage", "summary.json: not valid JSON (Expecting value at line 1)"),
    ("overrides.yaml not UTF-8", ".hydra/overrides.yaml", b"- \xff", ".hydra/overrides.yaml is not UTF-8 text "
     "(invalid start byte at byte 2)"),
]
IDS = [row[0] for row in DAMAGES]


def _outputs(root, damage):
    """Two good imp runs (0.5 and 0.8 sparsity, two seeds at 0.5) and one damaged run at 0.9 under x/."""
    _, name, data, _ = damage
    make_run(root / "a", method_config("imp", sparsity=0.5), {"test_accuracy": 0.5, "method": "imp"})
    make_run(root / "b", method_config("imp", sparsity=0.5, seed=1), {"test_accuracy": 0.7, "method": "imp"})
    make_run(root / "c", method_config("imp", sparsity=0.8), {"test_accuracy": 0.6, "method": "imp"})
    bad = make_run(root / "x" / "evil", method_config("imp", sparsity=0.9), {"test_accuracy": 0.99})
    (bad / name).write_bytes(data)
    now = time.time()
    for run in ("a", "b", "c", "x/evil"):
        os.utime(root / run / "run.json", (now - 125, now - 125))
    return root, bad


@pytest.mark.parametrize("damage", DAMAGES, ids=IDS)
def test_ls_runs_lists_the_damaged_run_as_unreadable_and_goes_on(tmp_path, capsys, damage):
    root, bad = _outputs(tmp_path / "out", damage)
    assert runner(["ls", "runs", str(root)]) == 0
    out, err = capsys.readouterr()
    shown = str(root)
    assert out.splitlines() == [
        f"done        2m  {shown}/a       imp  test_accuracy=0.5000",
        f"done        2m  {shown}/b       imp  test_accuracy=0.7000",
        f"done        2m  {shown}/c       imp  test_accuracy=0.6000",
        f"UNREADABLE  2m  {bad}  ?",
        f"                reason: {damage[3]}",
    ]
    assert err.splitlines()[0] == "4 run(s): 3 done, 1 unreadable"
    assert runner(["ls", "runs", str(root), "--status", "unreadable"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(f"UNREADABLE  2m  {bad}  ?")


@pytest.mark.parametrize("damage", DAMAGES, ids=IDS)
def test_table_and_page_leave_the_damaged_run_out_of_every_cell(tmp_path, capsys, damage):
    root, bad = _outputs(tmp_path / "out", damage)
    page = tmp_path / "page.html"
    assert runner(["table", str(root), "--html", str(page)]) == 0
    out, err = capsys.readouterr()
    assert out == ("| sparsity | test_accuracy |\n"
                   "|---|---|\n"
                   "| 0.5 | 0.6000 ± 0.1414 (n=2) |\n"
                   "| 0.8 | 0.6000 (n=1) |\n"
                   "\n"
                   "1 run(s) without results:\n"
                   f"- unreadable: {bad} ({damage[3]})\n")
    assert "runner table: note: 1 of 4 run(s) cannot be read and are left out (listed under the table)" in err
    html = page.read_text()
    assert "4 run(s), 3 finished, 1 unreadable (left out);" in html
    import html as escape

    assert (f'<li><span class="status-unreadable">unreadable</span> {escape.escape(str(bad))} '
            f"({escape.escape(damage[3])})</li>") in html
    assert "0.99" not in html  # the damaged run's number is in no cell


def test_json_format_lists_the_unreadable_run_among_the_problems(tmp_path, capsys):
    import json

    root, bad = _outputs(tmp_path / "out", DAMAGES[1])
    assert runner(["table", str(root), "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["problems"] == [{"path": str(bad), "status": "unreadable", "reason": DAMAGES[1][3]}]
    assert [cell["n"] for cell in payload["cells"]] == [2, 1]


def test_a_table_of_only_damaged_runs_is_one_line_exit_2(tmp_path, capsys):
    root, bad = _outputs(tmp_path / "out", DAMAGES[1])
    assert runner(["table", str(root / "x")]) == 2
    assert capsys.readouterr().err == f"runner table: error: {bad}/{DAMAGES[1][3]}\n"
    (root / "x" / "two").mkdir()
    make_run(root / "x" / "two", base_config(), {"test_accuracy": 0.5})
    (root / "x" / "two" / "summary.json").write_bytes(b"garbage")
    assert runner(["table", str(root / "x")]) == 2
    assert capsys.readouterr().err == (f"runner table: error: none of the 2 run(s) can be read; {bad}: "
                                       f"{DAMAGES[1][3]}\n")


def _claim_sweep(root):
    claims = [{"text": "CNN beats MLP", "expect": "acc(model=cnn1d) - acc(model=mlp) >= 0.05"}]
    for job, (model, accuracy) in enumerate((("mlp", 0.64), ("cnn1d", 0.86), ("mlp", 0.62), ("cnn1d", 0.84))):
        make_run(root / str(job), base_config(seed=job // 2, model={"name": model}, claims=claims),
                 {"test_accuracy": accuracy, "method": "dense"})
    return root


def test_claims_pass_exits_0_but_not_when_a_run_could_not_be_counted(tmp_path, capsys):
    root = _claim_sweep(tmp_path / "sweep")
    assert runner(["table", str(root), "--claims"]) == 0
    capsys.readouterr()
    (root / "3" / "run.json").write_bytes(b"{\xff")
    # The claim still passes on the three runs left, but a verdict that could not count every run is not one.
    assert runner(["table", str(root), "--claims"]) == 1
    out = capsys.readouterr().out
    assert "PASS  CNN beats MLP" in out and "1/1 claims passed" in out
    assert out.rstrip().endswith("(checked without 1 unreadable run(s): not a verdict over every run)")


def _readme_block(first_line):
    """The console block of README.md that starts with `first_line`, up to its closing fence."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = text.index(first_line)
    return text[start:text.index("```", start)].splitlines()


def test_the_readme_example_is_what_the_runner_prints(tmp_path, capsys, monkeypatch):
    sweep = tmp_path / "outputs" / "multirun" / "2026-12-01" / "16-01-11"
    for job, (sparsity, accuracy) in enumerate(((0.5, 0.317), (0.5, 0.322), (0.75, 0.329), (0.75, 0.317))):
        make_run(sweep / str(job), method_config("imp", sparsity=sparsity), {"test_accuracy": accuracy},
                 overrides=["method=imp", "prune.rate=0.5", f"sparsity={sparsity}", f"seed={job % 2}",
                            "train.epochs=2"])
    (sweep / "2" / "run.json").write_bytes(b"{\xff\xfe")
    for job in range(4):
        os.utime(sweep / str(job) / "run.json", (time.time() - 65, time.time() - 65))
    monkeypatch.chdir(tmp_path)
    assert runner(["ls", "runs", "outputs/multirun/2026-12-01/16-01-11"]) == 0
    out, err = capsys.readouterr()
    block = _readme_block("$ runner ls runs outputs/multirun/2026-12-01/16-01-11")
    assert [f"$ runner ls runs {sweep.relative_to(tmp_path)}", *out.splitlines(), *err.splitlines()] == block
