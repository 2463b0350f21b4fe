"""Claims: the expectation language is safe, lookups find the right cells, a false claim reports FAIL."""

from __future__ import annotations

import pytest
from report_helpers import base_config, make_run, method_config

from overparam.cli.main import main as runner
from overparam.cli.presets import report_sweep
from overparam.report.claims import ClaimError, claim_list, evaluate_claim, parse_expectation
from overparam.report.index import index_runs, records_of


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')",
    "acc(model=mlp).real > 0",
    "open('/etc/passwd')",
    "[x for x in ()]",
    "acc(**{'model': 'mlp'}) > 0",
    "lambda: 0",
    "acc(model=mlp)[0] > 0",
    "'text' == 'text'",
    "acc('mlp') > 0",
    "acc(model=len(())) > 0",
    "x if 1 else 2",
])
def test_only_the_documented_constructs_parse(text):
    with pytest.raises(ClaimError):
        parse_expectation(text)


def test_allowed_constructs_parse():
    for text in ("acc(method=imp, remaining=0.2) >= acc(method=dense) - 0.005",
                 "0.1 < std(acc(model=mlp)) * 2 <= 0.5 and not n(acc(model=mlp)) < 2",
                 "abs(loss(alpha=0.5, aligned=True) - loss(alpha=0, aligned=True)) / 2 < 1e-1 or 1 == 1",
                 "test_accuracy(optim__lr=-0.1, model='mlp') != 0"):
        parse_expectation(text)


@pytest.fixture
def records(tmp_path):
    """mlp: 0.60/0.64; cnn1d: 0.80/0.86 (two seeds each); an imp run with levels; a failed cnn run."""
    for seed, (mlp, cnn) in enumerate(((0.60, 0.80), (0.64, 0.86))):
        make_run(tmp_path / f"mlp{seed}", base_config(seed=seed), {"test_accuracy": mlp})
        make_run(tmp_path / f"cnn{seed}", base_config(seed=seed, model={"name": "cnn1d", "channels": 32}),
                 {"test_accuracy": cnn})
    make_run(tmp_path / "cnn_failed", base_config(seed=2, model={"name": "cnn1d", "channels": 32}), None,
             status="failed", reason="killed")
    levels = [{"level": lv, "remaining_fraction": 0.8 ** lv, "sparsity": 1 - 0.8 ** lv,
               "test_accuracy": 0.7 + 0.01 * lv, "early_stop_step": 100 - lv} for lv in range(9)]
    make_run(tmp_path / "imp0", method_config("imp"), {"levels": levels, "test_accuracy": 0.78})
    return records_of(index_runs([tmp_path]))


def _claim(expect):
    return claim_list([{"text": "t", "source": "s", "expect": expect}])[0]


def test_true_claim_passes_with_measured_numbers(records):
    result = evaluate_claim(_claim("acc(model=cnn1d, method=dense) - acc(model=mlp, method=dense) >= 0.2"), records)
    assert result.passed, result.report()
    cnn = next(lookup for lookup in result.lookups if "cnn1d" in lookup.text)
    assert cnn.cell.mean == pytest.approx(0.83) and cnn.cell.n == 2 and cnn.cell.failed == 1
    report = result.report()
    assert report.startswith("PASS") and "0.8300 ± 0.0424 (n=2) [1 failed]" in report
    assert "measured: 0.2100 >= 0.2000: yes" in report


def test_false_claim_reports_fail(records):
    result = evaluate_claim(_claim("acc(model=mlp, method=dense) > acc(model=cnn1d, method=dense)"), records)
    assert not result.passed and result.error is None
    assert result.report().startswith("FAIL")
    assert "measured: 0.6200 > 0.8300: no" in result.report()


def test_level_lookup_nearest_remaining_and_wrappers(records):
    # 0.8**7 = 0.2097 is the level nearest to 20% remaining: level 7, accuracy 0.77
    result = evaluate_claim(_claim(["acc(method=imp, remaining=0.2) == 0.77",
                                    "early_stop_step(method=imp, level=0) == 100",
                                    "n(acc(model=cnn1d, method=dense)) == 2"]), records)
    assert result.passed, result.report()
    assert result.lookups[0].chosen == {"remaining_fraction": pytest.approx(0.8 ** 7)}


def test_ambiguous_or_missing_lookups_fail_with_a_reason(records):
    ambiguous = evaluate_claim(_claim("acc(method=dense) > 0"), records)
    assert not ambiguous.passed and "choose model" in ambiguous.error
    levels = evaluate_claim(_claim("acc(method=imp) > 0"), records)
    assert "choose level" in levels.error
    far = evaluate_claim(_claim("acc(method=imp, remaining=0.05) > 0"), records)
    assert "no remaining_fraction within 10% of 0.05" in far.error
    absent = evaluate_claim(_claim("acc(model=resnet20, method=dense) > 0"), records)
    assert "no run with model=resnet20" in absent.error
    not_a_comparison = evaluate_claim(_claim("acc(model=mlp, method=dense)"), records)
    assert not not_a_comparison.passed and "not a comparison" in not_a_comparison.error


def test_claims_block_is_validated():
    with pytest.raises(ClaimError, match="unknown keys"):
        claim_list([{"text": "t", "expect": "1 < 2", "tolerance": 1}])
    with pytest.raises(ClaimError, match="does not parse"):
        claim_list([{"text": "t", "expect": "acc(model=mlp >"}])
    with pytest.raises(ClaimError, match="must be a list"):
        claim_list({"text": "t"})


def _preset_sweep(root, expect):
    """A finished sweep of the cnn_vs_mlp kind whose saved configs carry one claim."""
    claims = [{"text": "CNN beats MLP", "source": "MNIST-1D", "expect": expect}]
    for job, (model, accuracy) in enumerate((("mlp", 0.64), ("cnn1d", 0.86), ("mlp", 0.62), ("cnn1d", 0.84))):
        config = base_config(seed=job // 2, model={"name": model}, claims=claims)
        make_run(root / str(job), config, {"test_accuracy": accuracy, "method": "dense"},
                 overrides=["experiment=cnn_vs_mlp", f"model={model}", f"seed={job // 2}"])
    return claims


def test_preset_with_a_false_expectation_reports_fail(tmp_path, capsys):
    claims = _preset_sweep(tmp_path, "acc(model=mlp) > acc(model=cnn1d)")  # deliberately false
    assert report_sweep(tmp_path, claim_list(claims)) == 1
    out = capsys.readouterr().out
    assert "FAIL  CNN beats MLP" in out and "measured: 0.6300 > 0.8500: no" in out and "0/1 claims passed" in out
    assert (tmp_path / "figure.png").stat().st_size > 5000
    assert "FAIL" in (tmp_path / "claims.md").read_text()
    # the same check from the saved configs, through `runner table --claims`
    assert runner(["table", str(tmp_path), "--claims"]) == 1


def test_preset_with_a_true_expectation_passes(tmp_path, capsys):
    _preset_sweep(tmp_path, "acc(model=cnn1d) - acc(model=mlp) >= 0.05")
    assert runner(["table", str(tmp_path), "--claims"]) == 0
    assert "PASS  CNN beats MLP" in capsys.readouterr().out


def _presets():
    from overparam.cli.paths import config_dir

    return sorted((config_dir() / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", _presets(), ids=lambda p: p.stem)
def test_every_preset_claim_parses(preset):
    """A preset's claims are checked before its sweep runs; a typo must fail here, not after hours of training."""
    import yaml

    claims = yaml.safe_load(preset.read_text()).get("claims")
    for claim in claim_list(claims):
        assert claim["text"] and claim["source"], f"{preset.name}: every claim names its text and source"
