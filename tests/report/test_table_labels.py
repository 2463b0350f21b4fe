"""Two sweeps that differ in many keys: one column per sweep, named `key=value`, rows by what varies within one.

Before, every differing value went into the row label (`imp, mlp, 0.5, init, 0.2, global`) under a header of
six keys; keys that only tell the sweeps apart are constant within a column and belong to its header.
"""

from __future__ import annotations

import html as escape

from report_helpers import base_config, make_run, method_config

from overparam.cli.main import main as runner


def _two_sweeps(root):
    """An IMP sweep on an MLP (sparsity 0.5, 0.8 x 2 seeds, batch 64) and a dense CNN sweep (2 seeds, batch 128)."""
    for job, (sparsity, seed, accuracy) in enumerate([(0.5, 0, 0.81), (0.5, 1, 0.83), (0.8, 0, 0.78), (0.8, 1, 0.76)]):
        config = method_config("imp", sparsity=sparsity, seed=seed, rewind="init",
                               prune={"rate": 0.2, "scope": "global"}, train__batch_size=64)
        make_run(root / "imp" / str(job), config, {"test_accuracy": accuracy})
    for job, (seed, accuracy) in enumerate([(0, 0.85), (1, 0.87)]):
        config = base_config(seed=seed, model={"name": "cnn1d", "channels": [8]}, train__batch_size=128)
        make_run(root / "dense" / str(job), config, {"test_accuracy": accuracy})
    return [str(root / "imp"), str(root / "dense")]


def test_keys_that_tell_sweeps_apart_name_the_columns(tmp_path, capsys):
    sweeps = _two_sweeps(tmp_path)
    assert runner(["table", *sweeps]) == 0
    out, err = capsys.readouterr()
    assert out == (
        "| sparsity | method=dense, model=cnn1d, train.batch_size=128 | method=imp, model=mlp, rewind=init, "
        "train.batch_size=64 |\n"
        "|---|---|---|\n"
        "| 0 | 0.8600 ± 0.0141 (n=2) | — |\n"
        "| 0.5 | — | 0.8200 ± 0.0141 (n=2) |\n"
        "| 0.8 | — | 0.7700 ± 0.0141 (n=2) |\n")
    # Four keys at most in a header (those every column sets first); the rest are said, not dropped silently.
    assert err == ("runner table: note: columns also differ in prune.rate, prune.scope (--format csv or json gives "
                   "every key)\n")


def test_csv_keeps_every_key_as_its_own_column(tmp_path, capsys):
    assert runner(["table", *_two_sweeps(tmp_path), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("sparsity,method,model,rewind,prune.rate,prune.scope,train.batch_size,metric,mean,std,n,"
                        "failed,unfinished,missing")
    assert lines[1].startswith("0,dense,cnn1d,null,null,null,128,test_accuracy,0.86,")


def test_the_page_names_the_same_columns(tmp_path, capsys):
    page = tmp_path / "page.html"
    assert runner(["table", *_two_sweeps(tmp_path), "--html", str(page)]) == 0
    text = page.read_text()
    assert (f"<th>sparsity</th><th>{escape.escape('method=dense, model=cnn1d, train.batch_size=128')}</th>"
            f"<th>{escape.escape('method=imp, model=mlp, rewind=init, train.batch_size=64')}</th>") in text


def test_keys_asked_for_are_laid_out_as_asked(tmp_path, capsys):
    assert runner(["table", *_two_sweeps(tmp_path), "--rows", "method,model,sparsity", "--cols", "train.batch_size"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:3] == ["| method / model / sparsity | train.batch_size=64 | train.batch_size=128 |",
                                    "|---|---|---|",
                                    "| dense, cnn1d, 0 | — | 0.8600 ± 0.0141 (n=2) |"]


def test_a_full_grid_keeps_its_rows_and_columns(tmp_path, capsys):
    for job, (method, sparsity, accuracy) in enumerate([("imp", 0.5, 0.8), ("imp", 0.8, 0.7),
                                                        ("random_prune", 0.5, 0.6), ("random_prune", 0.8, 0.5)]):
        make_run(tmp_path / str(job), method_config(method, sparsity=sparsity), {"test_accuracy": accuracy})
    assert runner(["table", str(tmp_path)]) == 0
    assert capsys.readouterr().out == ("| method | sparsity=0.5 | sparsity=0.8 |\n"
                                       "|---|---|---|\n"
                                       "| imp | 0.8000 (n=1) | 0.7000 (n=1) |\n"
                                       "| random_prune | 0.6000 (n=1) | 0.5000 (n=1) |\n")
