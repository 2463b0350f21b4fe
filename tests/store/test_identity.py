"""One identity rule: the config hash, the level cache key, table grouping and reproduce agree on it."""

from __future__ import annotations

import pytest

from overparam.errors import UserError
from overparam.store import Run
from overparam.store.identity import config_hash, identity_differences, is_identity_key, level_cache_key

BASE = {"seed": 0, "sparsity": 0.5, "optim": {"lr": 0.1},
        "train": {"epochs": 3, "checkpoint_seconds": 30, "checkpoint_every": None},
        "hardware": {"device": "cpu", "threads": None, "precision": "fp32"},
        "paths": {"output_dir": "outputs"}, "objective": "val_accuracy"}


def _with(tree: dict, dotted: str, value) -> dict:
    import copy

    out = copy.deepcopy(tree)
    node = out
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out


@pytest.mark.parametrize("dotted, value", [
    ("hardware.threads", 7), ("train.checkpoint_seconds", 1), ("train.checkpoint_every", 5),
    ("paths.output_dir", "elsewhere"), ("objective", "test_accuracy"), ("prune.cache", False),
    ("merge.allow_val_overlap", True), ("claims", ["x > 1"]), ("new_option", None),
])
def test_observation_keys_change_neither_hash_nor_cache_key_nor_grouping(dotted, value):
    changed = _with(BASE, dotted, value)
    assert config_hash(changed) == config_hash(BASE)
    assert level_cache_key(changed) == level_cache_key(BASE)
    assert identity_differences(changed, BASE) == []
    if value is not None:
        assert not is_identity_key(dotted)


@pytest.mark.parametrize("dotted, value", [("seed", 1), ("optim.lr", 0.2), ("hardware.precision", "bf16"),
                                           ("train.epochs", 4), ("dataset.split_seed", 3)])
def test_semantic_keys_change_the_hash_and_the_cache_key(dotted, value):
    changed = _with(BASE, dotted, value)
    assert config_hash(changed) != config_hash(BASE)
    assert level_cache_key(changed) != level_cache_key(BASE)
    assert is_identity_key(dotted)
    assert [d[0] for d in identity_differences(changed, BASE)] == [dotted]


def test_sparsity_is_in_the_hash_but_not_in_the_level_cache_key():
    other = _with(BASE, "sparsity", 0.9)
    assert config_hash(other) != config_hash(BASE)
    assert level_cache_key(other) == level_cache_key(BASE)
    assert level_cache_key(_with(BASE, "control", "random_reinit"), drop=("control",)) == level_cache_key(BASE)


def test_table_grouping_uses_the_same_rule():
    from overparam.report import index

    assert index.is_identity_key("optim.lr") and not index.is_identity_key("hardware.threads")
    assert not index.is_identity_key("train.checkpoint_seconds") and not index.is_identity_key("paths.output_dir")


def test_a_run_resumes_under_another_thread_count_and_checkpoint_interval(tmp_path):
    Run(tmp_path / "run", BASE).start()
    again = Run(tmp_path / "run", _with(_with(BASE, "hardware.threads", 1), "train.checkpoint_seconds", 0)).start()
    assert again.resumed
    with pytest.raises(UserError, match="another config"):
        Run(tmp_path / "run", _with(BASE, "optim.lr", 0.3)).start()


def test_the_default_configs_identity_is_pinned():
    """A change here means every existing run's identity changed (and old run directories refuse to resume).

    Last changed when dataset.split_seed was added and objective/hardware.threads/checkpoint_* left the
    identity: the default run went from 0b79f1ea3ac24909 to ff932d73b3a1428b.
    """
    from overparam.cli.train import compose_checked

    assert config_hash(compose_checked([])) == "ff932d73b3a1428b"
    imp = compose_checked(["method=imp", "sparsity=0.8"])
    assert config_hash(imp) == "03e504906e9f62b3"
    assert level_cache_key(imp, drop=("control",)) == "28fdfe8cf4a23dd6"
    assert level_cache_key(compose_checked(["method=imp", "sparsity=0.5", "hardware.threads=2",
                                            "train.checkpoint_seconds=0"]), drop=("control",)) == "28fdfe8cf4a23dd6"
