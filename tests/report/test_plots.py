"""Figures: the lottery figure, the interpolation path, bars and per-level training curves are written."""

from __future__ import annotations

import json

import pytest
from report_helpers import base_config, make_run, method_config

from overparam.cli.main import main as runner
from overparam.report import plots
from overparam.report.index import index_runs, records_of

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 10_000


@pytest.fixture
def lottery(tmp_path):
    """imp with 6 levels and a random-reinit control (3 seeds each), random_prune at 3 sparsities, dense."""
    root = tmp_path / "lottery"
    for seed in range(3):
        for method, slope in (("imp", 0.004), ("random_reinit", -0.03)):
            levels = [{"level": lv, "remaining_fraction": 0.8 ** lv, "sparsity": 1 - 0.8 ** lv,
                       "test_accuracy": 0.9 + slope * lv + 0.005 * seed, "val_accuracy": 0.9} for lv in range(6)]
            make_run(root / f"{method}{seed}", method_config(method, seed=seed), {"levels": levels})
        for sparsity in (0.5, 0.8, 0.9):
            make_run(root / f"rp{seed}_{sparsity}", method_config("random_prune", seed=seed, sparsity=sparsity),
                     {"test_accuracy": 0.9 - 0.2 * sparsity + 0.01 * seed, "sparsity": sparsity})
        make_run(root / f"dense{seed}", base_config(seed=seed), {"test_accuracy": 0.9 + 0.004 * seed})
    return root


def test_lottery_figure(lottery, tmp_path):
    records = records_of(index_runs([lottery]))
    assert plots.choose_kind(records) == "lottery"
    out = plots.lottery_figure(records, tmp_path / "lottery.png")
    assert _is_png(out)


def test_lottery_figure_with_a_list_valued_setting(tmp_path):
    """A key that varies across runs and holds a list (lora.targets) is a series label, not a crash."""
    root = tmp_path / "lists"
    for sparsity, targets in ((0.5, ["*"]), (0.7, ["fc*"])):
        config = method_config("lora", sparsity=sparsity)
        config["lora"] = {"targets": targets}
        make_run(root / f"lora{sparsity}", config, {"test_accuracy": 1 - sparsity, "sparsity": sparsity})
    make_run(root / "dense", base_config(), {"test_accuracy": 0.9})
    assert _is_png(plots.lottery_figure(records_of(index_runs([root])), tmp_path / "lists.png"))


def test_lottery_ticks_sit_where_the_points_are(lottery, tmp_path, monkeypatch):
    assert plots.remaining_ticks([100, 50, 25, 50, 12.5]) == [100, 50, 25, 12.5]
    saved = {}
    real_save = plots._save

    def keep_ticks(fig, out):
        axis = fig.axes[0]
        saved["ticks"] = [round(t, 4) for t in axis.get_xticks()]
        saved["labels"] = [label.get_text() for label in axis.get_xticklabels()]
        return real_save(fig, out)

    monkeypatch.setattr(plots, "_save", keep_ticks)
    plots.lottery_figure(records_of(index_runs([lottery])), tmp_path / "lottery.png")
    # points at 100 * 0.8^level and random_prune's 50, 20, 10: ticks on points, none closer than 1.4x
    assert saved["ticks"] == [100, 64, 40.96, 20, 10]
    assert saved["labels"] == ["100", "64", "41", "20", "10"]


def test_path_figure_before_and_after_alignment(tmp_path):
    for seed in range(2):
        rows = [{"alpha": a / 10, "aligned": aligned, "loss": 0.3 + (0.0 if aligned else 1.2) * (a / 10) * (1 - a / 10)
                 + 0.01 * seed, "accuracy": 0.9 - (0.05 if aligned else 0.5) * 4 * (a / 10) * (1 - a / 10)}
                for aligned in (False, True) for a in range(11)]
        make_run(tmp_path / "lmc" / str(seed), method_config("lmc", seed=seed), {"rows": rows})
    records = records_of(index_runs([tmp_path / "lmc"]))
    assert plots.choose_kind(records) == "path"
    assert runner(["table", str(tmp_path / "lmc"), "--metric", "loss", "--plot", str(tmp_path / "path.png")]) == 0
    assert _is_png(tmp_path / "path.png")


def test_bar_figure_and_curves_from_metrics(tmp_path):
    run = make_run(tmp_path / "imp", method_config("imp"), {
        "levels": [{"level": lv, "remaining_fraction": 0.8 ** lv, "test_accuracy": 0.9} for lv in range(4)]})
    with open(run / "metrics.jsonl", "w") as handle:
        for level in range(4):
            for step in range(0, 101, 10):
                value = 0.1 + 0.8 * (1 - 0.97 ** (step * (1 + level / 3)))
                handle.write(json.dumps({"step": step, "level": level, "split": "test", "metric": "accuracy",
                                         "value": value}) + "\n")
        handle.write('{"step": 100, "lev')  # a torn last line (killed run) is skipped
    assert runner(["table", str(run), "--plot-curves", str(tmp_path / "curves.png")]) == 0
    assert _is_png(tmp_path / "curves.png")
    for model, accuracy in (("mlp", 0.64), ("cnn1d", 0.86)):
        make_run(tmp_path / "bars" / model, base_config(model={"name": model}), {"test_accuracy": accuracy})
    assert runner(["table", str(tmp_path / "bars"), "--plot", str(tmp_path / "bars.png")]) == 0
    assert _is_png(tmp_path / "bars.png")
    assert runner(["table", str(tmp_path / "bars"), "--plot-curves", str(tmp_path / "c.png")]) == 2  # two runs
