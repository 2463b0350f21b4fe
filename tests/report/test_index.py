"""The run index reads the config the store writes into run.json; older runs fall back to .hydra/config.yaml."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from report_helpers import base_config, make_run

from overparam.cli.main import main as runner
from overparam.errors import UserError
from overparam.report import index
from overparam.report.index import index_runs, read_run
from overparam.store import Run

# Config trees as OmegaConf resolves them: nested mappings and lists of JSON scalars. Non-finite
# floats are left out: run.json stores them as strings ("inf"), as it does for every other value.
_SCALARS = st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=12)
_TREES = st.recursive(_SCALARS, lambda children: st.lists(children, max_size=3)
                      | st.dictionaries(st.text(min_size=1, max_size=6), children, max_size=3), max_leaves=12)


def test_the_index_reads_the_config_the_store_writes(tmp_path):
    config = base_config(sparsity=0.9, model__widths=[64, 32])
    Run(tmp_path / "run", config).start().finish("done", summary={"test_accuracy": 0.75})
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["config"] == config and len(info["config_hash"]) == 16
    run = read_run(tmp_path / "run")  # no .hydra/ at all: run.json is enough
    assert run.config == config and run.finished
    assert run.flat_config["sparsity"] == 0.9
    assert run.flat_config["model"] == "mlp" and run.flat_config["model.widths"] == [64, 32]
    # run.json is the source; a .hydra/config.yaml beside it is not read.
    (tmp_path / "run" / ".hydra").mkdir()
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text(yaml.safe_dump(base_config(sparsity=0.1)))
    assert read_run(tmp_path / "run").flat_config["sparsity"] == 0.9


def test_a_resumed_run_keeps_its_config_in_run_json(tmp_path):
    config = base_config(paths__output_dir="first")
    Run(tmp_path / "run", config).start()
    moved = base_config(paths__output_dir="second")  # same identity: paths are not part of it
    Run(tmp_path / "run", moved).start()
    assert read_run(tmp_path / "run").flat_config["paths.output_dir"] == "second"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=st.dictionaries(st.text(min_size=1, max_size=6), _TREES, min_size=1, max_size=4))
def test_any_config_comes_back_exactly(tmp_path_factory, tree):
    # Line breaks YAML knows and JSON does not (NEL \x85, \u2028) and lone surrogates included.
    folder = tmp_path_factory.mktemp("run")
    Run(folder, tree).start()
    assert read_run(folder).config == tree


def test_the_characters_yaml_treats_as_line_breaks_survive(tmp_path):
    tree = {"A": "\x85", "B": "a\u2028b", "C": " x\x85 "}
    Run(tmp_path / "run", {**base_config(), **tree}).start()
    run = read_run(tmp_path / "run")
    assert [run.flat_config[key] for key in tree] == ["\x85", "a\u2028b", " x\x85 "]


def test_runs_without_a_config_in_run_json_read_hydra_yaml(tmp_path):
    config = base_config(sparsity=0.8)
    config["prune"] = {"target": "${sparsity}", "rate": "${prune.missing}"}
    make_run(tmp_path / "old", config, {"test_accuracy": 0.5}, config_in_run_json=False,
             overrides=["sparsity=0.8"])
    run = read_run(tmp_path / "old")
    assert run.config["sparsity"] == 0.8 and run.overrides == ["sparsity=0.8"]
    # Hydra saves config.yaml unresolved: plain references are resolved, others kept as written.
    assert run.flat_config["prune.target"] == 0.8
    assert run.flat_config["prune.rate"] == "${prune.missing}"
    assert run.flat_config["paths.data_dir"] == "${oc.env:HOME}/data"


def test_hydra_yaml_and_run_json_give_the_same_flat_config(tmp_path):
    from omegaconf import OmegaConf

    from overparam.cli.train import compose_checked

    for overrides in ([], ["method=imp", "sparsity=0.9", "rewind=1ep"], ["experiment=rebasin_mlp"]):
        config = compose_checked(overrides)
        new = tmp_path / f"new{len(overrides)}"
        Run(new, config).start()
        old = make_run(tmp_path / f"old{len(overrides)}", {}, None, config_in_run_json=False)
        (old / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
        assert read_run(old).flat_config == read_run(new).flat_config
        assert read_run(new).flat_config["method"] == config["method"]["name"]


def test_the_fallback_uses_pyyaml_safe_c_loader():
    expected = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader
    from overparam.store.readers import yaml_loader

    assert yaml_loader() is expected
    # Safe: a tag that would build a Python object is refused, not run.
    with pytest.raises(yaml.YAMLError):
        yaml.load("!!python/object/apply:os.system ['true']", Loader=yaml_loader())


@pytest.mark.parametrize("text, problem", [
    ("seed: 0\nmodel: [mlp,\n", "not valid YAML at line 3"),
    ("seed: 0\n  sparsity: 0.5\n", "not valid YAML at line 2"),
    ("- a\n- b\n", "is not a config (a YAML mapping); it holds a list"),
    ("!!python/object/apply:os.system ['true']\n", "has the YAML tag tag:yaml.org,2002:python/object/apply:os.system"),
])
def test_a_malformed_config_yaml_is_one_clear_line(tmp_path, capsys, text, problem):
    run = make_run(tmp_path / "sweep" / "0", base_config(), {"test_accuracy": 0.5}, config_in_run_json=False)
    make_run(tmp_path / "sweep" / "1", base_config(seed=1), {"test_accuracy": 0.6})
    (run / ".hydra" / "config.yaml").write_text(text)
    with pytest.raises(UserError, match=re.escape(problem)):
        read_run(run)
    # In a listing the damaged run is one row marked unreadable; the other run's table goes on.
    damaged = [r for r in index_runs([tmp_path / "sweep"]) if r.status == "unreadable"]
    assert [r.path for r in damaged] == [run] and damaged[0].reason.startswith(".hydra/config.yaml")
    assert problem in damaged[0].reason and "\n" not in damaged[0].reason
    assert runner(["table", str(tmp_path / "sweep")]) == 0
    captured = capsys.readouterr()
    assert "| 0.6000 (n=1) |" in captured.out and f"- unreadable: {run} (.hydra/config.yaml" in captured.out
    assert "Traceback" not in captured.err
    assert (run / ".hydra" / "config.yaml").read_text() == text  # nothing rewritten


def test_a_config_yaml_that_is_not_utf8_is_one_clear_line(tmp_path):
    run = make_run(tmp_path / "0", base_config(), {"test_accuracy": 0.5}, config_in_run_json=False)
    (run / ".hydra" / "config.yaml").write_bytes(b"seed: \xff\xfe\n")
    with pytest.raises(UserError, match="is not UTF-8 text"):
        read_run(run)
