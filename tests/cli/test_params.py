"""Each method declares its parameters once (overparam/params.py, overparam/recipes/<family>/params.py):
validation, `runner ls method NAME`, the typed object a recipe receives, and the YAML defaults agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from overparam.components import REGISTRIES
from overparam.configtree import config_dir
from overparam.errors import UserError
from overparam.params import Param, Params, Spec
from overparam.specs import SHARED, all_specs

from light_cli import run_light

CALLS: list[tuple] = []


def record_call(params, cfg) -> None:
    """A cross-field rule named as "module:function" (imported only when a spec validates)."""
    CALLS.append((params["a.rate"], cfg.get("seed")))


def _ratio_below_one(params: Params, cfg: dict) -> None:
    if params["a.rate"] * params["a.count"] >= 1:
        raise UserError(f"a.rate * a.count must stay below 1, got {params['a.rate'] * params['a.count']:g}")


SPEC = Spec("toy", [
    Param("a.rate", "float", 0.2, "open at both ends", low=0.0, high=1.0, low_open=True, high_open=True),
    Param("a.count", "int", 3, "closed at both ends", low=1, high=4),
    Param("a.mode", "choice", "x", "one of x, y", choices=("x", "y")),
    Param("a.limit", "float", None, "optional, above 0", low=0.0, low_open=True, optional=True),
    Param("a.flag", "bool", False, "a switch"),
    Param("a.widths", "list", [4, 4], "positive integers", item=lambda v: isinstance(v, int) and v >= 1,
          items="positive integers (widths)"),
], check=(_ratio_below_one, "test_params:record_call"))


def cfg_of(**values) -> dict:
    """A nested config of the toy spec's defaults with dotted-key overrides (a.rate=0.5)."""
    flat = {**SPEC.defaults(), **{k.replace("__", "."): v for k, v in values.items()}}
    return nested(flat)


def nested(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def message(spec: Spec, cfg: dict) -> str:
    with pytest.raises(UserError) as info:
        spec.validate(cfg)
    return str(info.value)


@pytest.mark.parametrize("key, value, expected", [
    ("a.rate", 0.0, "a.rate=0.0 is out of range; allowed: (0.0, 1.0)"),
    ("a.rate", 1.0, "a.rate=1.0 is out of range; allowed: (0.0, 1.0)"),
    ("a.rate", "half", "a.rate='half' must be a number"),
    ("a.rate", None, "a.rate is required (a number)"),
    ("a.count", 5, "a.count=5 is out of range; allowed: [1, 4]"),
    ("a.count", 0, "a.count=0 is out of range; allowed: [1, 4]"),
    ("a.count", 2.5, "a.count=2.5 must be an integer"),
    ("a.mode", "z", "a.mode='z' is not allowed; choose one of: x, y"),
    ("a.mode", None, "a.mode=None is not allowed; choose one of: x, y"),
    ("a.limit", 0, "a.limit=0 is out of range; allowed: (0.0, inf]"),
    ("a.flag", "yes", "a.flag='yes' must be true or false"),
    ("a.widths", [4, 0], "a.widths=[4, 0] must be a list of positive integers (widths)"),
    ("a.widths", 4, "a.widths=4 must be a list of positive integers (widths)"),
])
def test_a_bad_value_is_one_line_in_the_checks_wording(key, value, expected):
    assert message(SPEC, cfg_of(**{key.replace(".", "__"): value})) == expected


def test_closed_ends_and_optional_values_pass():
    CALLS.clear()
    params = SPEC.validate({**cfg_of(a__count=4, a__limit=None, a__rate=0.24), "seed": 7})
    assert params["a.count"] == 4 and params["a.limit"] is None
    assert CALLS == [(0.24, 7)]  # the "module:function" rule ran, once, on the typed values and the config
    assert SPEC.validate(cfg_of(a__count=1, a__limit=1e-9))["a.limit"] == 1e-9


def test_cross_field_rule_runs_after_the_values():
    assert message(SPEC, cfg_of(a__rate=0.5, a__count=2)) == "a.rate * a.count must stay below 1, got 1"
    # a bad value is reported before any cross-field rule sees it
    assert message(SPEC, cfg_of(a__rate=2.0, a__count=2)).startswith("a.rate=2.0 is out of range")


def test_parse_types_values_and_fills_absent_keys_with_defaults():
    params = SPEC.parse({"a": {"rate": 0.5, "count": 2, "widths": [8, 2]}})
    assert params.a.rate == 0.5 and params["a.count"] == 2 and type(params["a.count"]) is int
    assert params.a.widths == (8, 2)  # read-only: lists become tuples
    assert params.a.mode == "x" and params.a.flag is False  # absent: the declared defaults
    assert SPEC.parse({"a": {"count": 2.0}})["a.count"] == 2 and type(SPEC.parse({"a": {"count": 2.0}}).a.count) is int
    with pytest.raises(AttributeError):
        params.a.rate = 0.1
    with pytest.raises(AttributeError):
        params.a.missing
    assert params.as_dict()["a.widths"] == (8, 2)


def test_a_key_declared_twice_is_refused():
    with pytest.raises(ValueError, match="a.rate declared twice"):
        Spec("dup", [Param("a.rate", "float", 0.1), Param("a.rate", "float", 0.2)])


def _method_yaml(name: str) -> dict:
    if name == "search":
        tree = yaml.safe_load((config_dir() / "hparams_search" / "lr_wd.yaml").read_text())
        return {"search": tree["search"]}
    tree = yaml.safe_load((config_dir() / "method" / f"{name}.yaml").read_text())
    return {k: v for k, v in tree.items() if k not in ("method", "defaults")}


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", sorted(REGISTRIES["method"]))
def test_yaml_defaults_are_the_declared_defaults(name):
    spec = all_specs()[name]
    in_yaml = _flatten(_method_yaml(name))
    declared = spec.defaults()
    assert sorted(in_yaml) == sorted(declared), f"{name}: keys of the YAML and of the Spec differ"
    for key, value in in_yaml.items():
        default = declared[key]
        assert value == (list(default) if isinstance(default, tuple) else default), (name, key)
        assert type(value) is type(default) or {type(value), type(default)} <= {int, float}, (name, key)
    # the YAML's own values pass the Spec's value checks
    spec.parse(_method_yaml(name))
    assert all(p.doc for p in spec), f"{name}: every parameter has a one-line doc"


def test_every_registered_method_has_a_spec_and_no_spec_is_orphaned():
    assert sorted(all_specs()) == sorted(REGISTRIES["method"])


def test_shared_keys_spec_keeps_the_messages():
    base = {"seed": 0, "sparsity": 0.0, "train": {"steps": 10, "epochs": None, "batch_size": 8},
            "optim": {"name": "sgd", "lr": 0.1, "weight_decay": 0.0, "momentum": 0.9, "warmup_steps": 0,
                      "schedule": "cosine"},
            "hardware": {"precision": "fp32", "kernel": "auto"}}
    SHARED.validate(base)
    assert message(SHARED, {**base, "sparsity": 1.0}) == "sparsity=1.0 is out of range; allowed: [0.0, 1.0)"
    both = {**base, "train": {**base["train"], "epochs": 2}}
    assert message(SHARED, both) == "set exactly one of train.steps and train.epochs (the other to null)"
    assert message(SHARED, {**base, "seed": None}) == "seed is required (a number)"
    absent = {k: v for k, v in base.items() if k != "seed"}
    assert message(SHARED, absent) == "seed is required (a number)"


def test_real_specs_cross_field_rules():
    specs = all_specs()
    nm = nested({**specs["nm"].defaults(), "nm.n": 4})
    assert message(specs["nm"], nm) == "nm.n=4 must be smaller than nm.m=4"
    nm = nested({**specs["nm"].defaults(), "sparsity": 0.9})
    assert "leave sparsity at 0 or set it to 0.5" in message(specs["nm"], nm)
    imp = nested({**specs["imp"].defaults(), "rewind": "30it", "train.steps": 20, "train.epochs": None})
    assert message(specs["imp"], imp) == "rewind=30it is not before the end of training (train.steps=20)"
    imp = nested({**specs["imp"].defaults(), "rewind": "soon"})
    assert message(specs["imp"], imp).startswith("rewind='soon' is not allowed")
    imp = nested({**specs["imp"].defaults(), "prune.rate": 0.8, "prune.output_rate": 2.0})
    assert message(specs["imp"], imp) == "prune.output_rate=2.0 times prune.rate=0.8 must stay below 1"
    crumbs = nested({**specs["breadcrumbs"].defaults(), "breadcrumbs.beta": 0.2, "breadcrumbs.gamma": 0.8})
    assert "must be below 1" in message(specs["breadcrumbs"], crumbs)


def test_ls_method_prints_the_parameter_table_without_torch():
    lines = run_light(["ls", "method", "imp"]).splitlines()
    assert lines[0].startswith("imp: Iterative magnitude pruning")
    assert lines[1].split() == ["key", "type", "allowed", "default", "doc"]
    rows = {line.split()[0]: line.split() for line in lines[2:] if line.strip() and not line.startswith("(")}
    assert rows["prune.rate"][:4] == ["prune.rate", "float", "(0.0,", "1.0)"] and rows["prune.rate"][4] == "0.2"
    assert rows["control"][:4] == ["control", "choice", "none|random_reinit|random_mask|random_prune", "none"]
    assert rows["rewind"][:3] == ["rewind", "str", "init"]
    assert set(rows) == set(all_specs()["imp"].keys())


def test_ls_unknown_method_is_one_line_exit_2():
    out = subprocess.run([sys.executable, "-m", "overparam.cli.main", "ls", "method", "nope"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("runner ls: error: unknown method 'nope'; choose one of:")


def test_a_recipe_runs_without_hydra_and_matches_the_runner(tmp_path):
    """dense.run(params, context) from a plain dict gives the numbers `runner train` gives for the same config."""
    from tiny_runs import TINY

    from overparam.cli.train import train_in_process
    from overparam.recipes import dense
    from overparam.recipes.context import Context
    from overparam.store import Run

    through_runner = train_in_process([*TINY, "method=dense", "seed=3"], tmp_path / "runner")
    config = yaml.safe_load((tmp_path / "runner" / ".hydra" / "config.yaml").read_text())
    config.pop("hydra", None)
    params = all_specs()["dense"].parse(config)
    run = Run(tmp_path / "plain", config, device="cpu", precision="fp32").start()
    summary = dense.run(params, Context.from_dict(config, run))
    assert Path(tmp_path / "plain" / "checkpoints" / "model.safetensors").is_file()
    assert summary["test_accuracy"] == through_runner["test_accuracy"]
    assert summary["test_loss"] == through_runner["test_loss"] and summary["val_accuracy"] == through_runner["val_accuracy"]
    assert summary["steps"] == 20 and summary["parameters"] == through_runner["parameters"]
    assert summary["test_accuracy"] > 0.15  # ten classes: above chance after 20 steps


def test_a_recipe_reads_its_own_keys_from_params(tmp_path):
    """random_prune reads prune.distribution from the typed params, not from the config."""
    from tiny_runs import TINY

    from overparam.cli.train import compose_checked
    from overparam.recipes.context import Context
    from overparam.recipes.prune import random_prune
    from overparam.store import Run

    config = compose_checked([*TINY, "method=random_prune", "sparsity=0.5", "prune.distribution=erk"])
    config.pop("hydra", None)
    erk = all_specs()["random_prune"].parse(config)
    uniform = all_specs()["random_prune"].parse({**config, "prune": {**config["prune"], "distribution": "uniform"}})
    assert erk.prune.distribution == "erk" and uniform.prune.distribution == "uniform"
    out = {}
    for name, params in (("erk", erk), ("uniform", uniform)):
        run = Run(tmp_path / name, config, device="cpu", precision="fp32").start()
        out[name] = random_prune.run(params, Context.from_dict(config, run))
    # the same config (prune.distribution=erk), only params differ: the layer densities follow params
    assert out["erk"]["remaining_weights"] == out["uniform"]["remaining_weights"] == 400
    assert out["uniform"]["layer_sparsity/fc0"] == pytest.approx(0.5, abs=1e-6)
    assert out["uniform"]["layer_sparsity/fc_out"] == pytest.approx(0.5, abs=1e-6)
    # ERK prunes the larger input layer harder than the 16x10 output layer (density ~ (n_in + n_out) / (n_in * n_out))
    assert out["erk"]["layer_sparsity/fc0"] > 0.55 and out["erk"]["layer_sparsity/fc_out"] < 0.25


def test_train_help_with_a_method_ends_with_its_parameters():
    out = subprocess.run([sys.executable, "-m", "overparam.cli.main", "train", "method=ties", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    tail = out.stdout[out.stdout.index("== Parameters of method=ties =="):].splitlines()
    rows = {line.split()[0]: line.split()[1:4] for line in tail[3:] if line.strip() and not line.startswith("(")}
    assert rows["ties.scope"] == ["choice", "global|tensor", "global"]
    assert rows["ties.density"] == ["float", "(0.0,", "1.0]"]


def test_tree_nests_a_block_of_params():
    """`params["teacher"].tree()` is the nested block kd/feature_kd hand to obtain_model."""
    params = all_specs()["kd"].parse({"teacher": {"model": "cnn1d", "train": {"steps": 7}, "optim": {"lr": 0.5}}})
    tree = params["teacher"].tree()
    assert tree == {"from": None, "model": "cnn1d", "untrained": False,
                    "train": {"steps": 7, "epochs": None, "batch_size": None},
                    "optim": {"name": None, "lr": 0.5, "weight_decay": None}}
    assert params.tree()["kd"] == {"temperature": 4.0, "alpha": 0.9, "baseline": False}
