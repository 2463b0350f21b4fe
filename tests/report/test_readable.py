"""Tables people read: pruning sweeps by `% remaining`, merge rows by name, titles that say what error bars are over."""

from __future__ import annotations

import pytest
from report_helpers import base_config, make_run, method_config

from overparam.report import plots
from overparam.report.aggregate import build_table
from overparam.report.formats import render
from overparam.report.index import index_runs, records_of

# remaining fractions as IMP writes them: 0.8**L with the rounding of whole weight counts
REMAINING = [1.0, 0.800003, 0.639997, 0.512001]


def _imp_sweep(root, seeds=(0, 1)):
    """IMP jobs of a sparsity sweep (0.36 and 0.49 stop at levels 2 and 3) over seeds."""
    job = 0
    for seed in seeds:
        for sparsity, levels in ((0.36, 3), (0.49, 4)):
            rows = [{"level": level, "sparsity": 1 - REMAINING[level], "remaining_fraction": REMAINING[level],
                     "test_accuracy": 0.9 - 0.01 * level + 0.002 * seed} for level in range(levels)]
            make_run(root / str(job), method_config("imp", seed=seed, sparsity=sparsity),
                     {"levels": rows, "test_accuracy": rows[-1]["test_accuracy"]})
            job += 1
    return root


def test_pruning_sweep_rows_are_percent_remaining_from_dense_down(tmp_path):
    records = records_of(index_runs([_imp_sweep(tmp_path / "sweep")]))
    table = build_table(records)
    assert table.row_keys == ["% remaining"] and table.col_keys == []
    assert table.rows == [(100.0,), (80.0,), (64.0,), (51.2,)]
    assert table.pooled == []  # the config's sparsity is what % remaining already shows
    # 100% and 80% come from all four jobs (two seeds x two sparsity jobs), 51.2% from the 0.49 jobs only.
    assert table.cell((100.0,), ()).n == 4 and table.cell((51.2,), ()).n == 2
    assert table.cell((51.2,), ()).mean == pytest.approx(0.9 - 0.03 + 0.001)
    text = render(table)
    assert text.splitlines()[0] == "| % remaining | test_accuracy |"
    assert text.splitlines()[2].startswith("| 100 | ") and text.splitlines()[5].startswith("| 51.2 | ")
    assert "0.199997" not in text and "level=" not in text


def _two_model_sweep(root):
    """One IMP sweep (rate 0.2 down to 50%) over two models, whose rounded counts give 63.99% vs 64% at level 2."""
    for job, (widths, total) in enumerate((([256, 256], 78_336), ([32], 4_321))):
        counts = [int(total * 0.8 ** level + 0.5) for level in range(4)] + [total // 2]
        rows = [{"level": level, "sparsity": 1 - count / total, "remaining_fraction": count / total,
                 "remaining_weights": count, "test_accuracy": 0.8 - 0.01 * level - 0.1 * job}
                for level, count in enumerate(counts)]
        make_run(root / str(job), method_config("imp", sparsity=0.5, prune={"rate": 0.2}, model__widths=widths),
                 {"levels": rows})
    return root


def test_levels_of_two_models_share_one_row_per_nominal_fraction(tmp_path):
    records = records_of(index_runs([_two_model_sweep(tmp_path / "sweep")]))
    # the small model's own counts round to other percentages than the nominal ones
    assert sorted({round(100 * r.row["remaining_fraction"], 2) for r in records if r.run.path.name == "1"}) == \
        [49.99, 51.19, 63.99, 80.0, 100.0]
    table = build_table(records)
    assert table.row_keys == ["% remaining"] and table.col_keys == ["model.widths"]
    assert table.rows == [(100.0,), (80.0,), (64.0,), (51.2,), (50.0,)]
    for level, row in enumerate(table.rows):
        assert [table.cell(row, col).mean for col in table.cols] == \
            pytest.approx([0.8 - 0.01 * level, 0.7 - 0.01 * level])
    text = render(table)
    assert "63.99" not in text and "51.19" not in text


def test_a_level_far_from_its_nominal_fraction_keeps_its_own_row(tmp_path):
    """Only rounding is absorbed: a level 2% off (another rate, an uneven layer) is a level of its own."""
    rows = [{"level": 1, "sparsity": 0.22, "remaining_fraction": 0.78, "remaining_weights": 7800,
             "test_accuracy": 0.7}, {"level": 0, "remaining_fraction": 1.0, "test_accuracy": 0.8}]
    make_run(tmp_path / "run", method_config("imp", sparsity=0.5, prune={"rate": 0.2}), {"levels": rows})
    table = build_table(records_of(index_runs([tmp_path / "run"])))
    assert table.rows == [(100.0,), (78.0,)]


def test_merge_rows_are_labeled_by_role_and_name(tmp_path):
    rows = [{"role": "merged", "name": "uniform_soup", "test_accuracy": 0.81}]
    rows += [{"role": "ingredient", "ingredient": i, "name": f"outputs/ft{i}", "test_accuracy": 0.7 + i / 100}
             for i in range(3)]
    make_run(tmp_path / "soup", method_config("uniform_soup"), {"rows": rows, "test_accuracy": 0.81})
    table = build_table(records_of(index_runs([tmp_path / "soup"])))
    assert table.row_keys == ["role", "name"]
    assert table.rows == [("ingredient", "outputs/ft0"), ("ingredient", "outputs/ft1"), ("ingredient", "outputs/ft2"),
                          ("merged", "uniform_soup")]
    text = render(table)
    assert text.splitlines()[0] == "| role / name | test_accuracy |"
    assert "| merged, uniform_soup | 0.8100 (n=1) |" in text and "row=" not in text


def test_interpolation_rows_are_labeled_by_alignment_and_alpha(tmp_path):
    rows = [{"aligned": aligned, "alpha": alpha, "test_accuracy": 0.5 + alpha / 10 + 0.1 * aligned}
            for aligned in (False, True) for alpha in (0.0, 0.5, 1.0)]
    make_run(tmp_path / "lmc", method_config("lmc"), {"rows": rows})
    table = build_table(records_of(index_runs([tmp_path / "lmc"])))
    assert table.row_keys + table.col_keys == ["aligned", "alpha"]


def _titles(monkeypatch):
    titles = []
    original = plots._save

    def capture(fig, out):
        titles.append(fig.axes[0].get_title() or fig._suptitle.get_text())
        return original(fig, out)

    monkeypatch.setattr(plots, "_save", capture)
    return titles


def test_figure_titles_say_what_the_error_bars_are_over(tmp_path, monkeypatch):
    titles = _titles(monkeypatch)
    seeds = records_of(index_runs([_imp_sweep(tmp_path / "seeds", seeds=(0, 1, 2))]))
    plots.lottery_figure(seeds, tmp_path / "a.png")
    assert titles[-1] == "test accuracy vs weights remaining (mean ± std over 3 seeds)"
    one_seed = records_of(index_runs([_imp_sweep(tmp_path / "one", seeds=(0,))]))
    plots.lottery_figure(one_seed, tmp_path / "b.png")
    # The two sparsity jobs of one seed share their first levels: the bars are not over seeds.
    assert titles[-1] == "test accuracy vs weights remaining (mean ± std over up to 2 runs of one config (same seed))"
    make_run(tmp_path / "bars" / "0", base_config(), {"test_accuracy": 0.8})
    make_run(tmp_path / "bars" / "1", method_config("oneshot"), {"test_accuracy": 0.7})
    records = records_of(index_runs([tmp_path / "bars"]))
    plots.bar_figure(build_table(records), tmp_path / "c.png", records=records)
    assert titles[-1] == "test accuracy (one run per point, no error bars)"
    make_run(tmp_path / "lr" / "0", base_config(optim__lr=0.1), {"test_accuracy": 0.8})
    make_run(tmp_path / "lr" / "1", base_config(optim__lr=0.2), {"test_accuracy": 0.7})
    records = records_of(index_runs([tmp_path / "lr"]))
    plots.bar_figure(build_table(records, rows=["method"], cols=[]), tmp_path / "d.png", records=records)
    assert titles[-1] == "test accuracy (mean ± std over optim.lr (one seed))"
