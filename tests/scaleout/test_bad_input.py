"""Every row of README's "What bad input gets": one line on stderr, exit code 2, existing runs untouched.

Each row runs through `runner train` in a subprocess (marked slow: ~5 s each) and through the
same CLI entry point in-process (fast, default run); numeric keys are also drawn by hypothesis.
"""

import math
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaleout_helpers import read_json, runner, tree_digest

EXISTING_RUN = ["train.epochs=null", "train.steps=4", "train.eval_every=2", "model.widths=[16]"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """An output root holding finished runs, plus a corrupt and an unfinished copy, and an empty data dir."""
    from overparam.cli.train import train_in_process

    root = tmp_path_factory.mktemp("bad-input")
    out = root / "outputs"
    train_in_process(EXISTING_RUN, out / "mlp16")
    train_in_process([*EXISTING_RUN[:3], "model.widths=[24, 8]"], out / "mlp24")
    shutil.copytree(out / "mlp16", out / "corrupt")
    weights = out / "corrupt" / "checkpoints" / "model.safetensors"
    weights.write_bytes(b"\x00\x01not a safetensors header" + weights.read_bytes()[40:200])
    shutil.copytree(out / "mlp16", out / "unfinished")
    info = (out / "unfinished" / "run.json").read_text().replace('"status": "done"', '"status": "running"')
    (out / "unfinished" / "run.json").write_text(info)
    (root / "empty-data").mkdir()
    return root


# (row, overrides, words the one line must contain); {out} / {root} are filled in from the fixture.
ROWS = [
    ("sparsity below 0", ["sparsity=-0.1"], "sparsity=-0.1 is out of range"),
    ("sparsity 1", ["sparsity=1"], "sparsity=1 is out of range"),
    ("sparsity above 1", ["sparsity=1.5"], "sparsity=1.5 is out of range"),
    ("sparsity nan", ["sparsity=nan"], "sparsity=nan must be a finite number"),
    ("label noise above 1", ["dataset.label_noise=1.5"], "dataset.label_noise=1.5 is out of range"),
    ("negative lr", ["optim.lr=-0.1"], "optim.lr=-0.1 is out of range"),
    ("zero steps", ["train.steps=0", "train.epochs=null"], "train.steps=0 is out of range"),
    ("negative steps", ["train.steps=-5", "train.epochs=null"], "train.steps=-5 is out of range"),
    ("unknown method", ["method=prune_everything"], "method=prune_everything is not an option; choose one of:"),
    ("unknown model", ["model=transformer9000"], "model=transformer9000 is not an option; did you mean gpt (Transformer "
     "LM) or transformer1d (Transformer encoder)? (runner ls model lists them all)"),
    ("unknown dataset", ["dataset=imagenet42"], "dataset=imagenet42 is not an option; choose one of:"),
    ("unknown hardware", ["hardware=tpu"], "hardware=tpu is not an option; choose one of:"),
    ("misspelled method", ["method=lotery"], "method=lotery is not an option; did you mean imp (lottery tickets)? "
     "(runner ls method lists them all)"),
    ("unknown key", ["method=imp", "sparsty=0.9"],
     "unknown key sparsty: nothing in this run (method=imp) reads it; did you mean sparsity?"),
    ("unknown method key", ["method=ties", "ties.densty=0.3"],
     "unknown key ties.densty: nothing in this run (method=ties) reads it; did you mean ties.density?"),
    ("prune.rate 0", ["method=imp", "prune.rate=0"], "prune.rate=0 is out of range"),
    ("prune.rate 1", ["method=imp", "prune.rate=1"], "prune.rate=1 is out of range"),
    ("ingredients empty", ["method=uniform_soup", "ingredients=[]"], "ingredients is empty"),
    ("ingredients missing", ["method=uniform_soup", "ingredients=[{out}/nowhere]"], "does not exist"),
    ("ingredients for a method that reads none", ["ingredients=[{out}/nowhere]"],
     "ingredients is set, but method=dense does not read it"),
    ("ingredients unfinished", ["method=uniform_soup", "ingredients=[{out}/mlp16,{out}/unfinished]"],
     "has not finished"),
    ("ingredients of different architectures", ["method=uniform_soup", "ingredients=[{out}/mlp16,{out}/mlp24]"],
     "mlp24"),
    ("from= run that does not exist", ["method=finetune", "from={out}/nowhere"], "nowhere"),
    ("dataset path with no files", ["dataset=cifar10", "paths.data_dir={root}/empty-data"], "not found under"),
    ("corrupt safetensors file", ["method=finetune", "from={out}/corrupt"], "corrupt"),
    ("an adapter the model's layers cannot take", ["method=lora", "lora.init=pissa", "lora.rank=12", "from={out}/mlp16"],
     "lora.init=pissa needs lora.rank <= min(in, out) of every adapted layer; a 16 -> 10 layer has 10"),
    ("adapter targets that match no layer", ["method=vera", "vera.targets=[conv*]", "from={out}/mlp16"],
     "vera.targets=['conv*'] match no Linear layer of the model"),
    ("a rank budget that grows", ["method=adalora", "adalora.init_r=4", "adalora.target_r=8"],
     "adalora.target_r=8 is above adalora.init_r=4: the rank budget only shrinks"),
]

VALID_NAME_LISTS = {"unknown method": "dense", "unknown dataset": "mnist1d",
                    "unknown hardware": "cpu"}


def _args(overrides, root):
    """`runner` arguments of a row: its overrides, the fixture's output root, a short training."""
    out = root / "outputs"
    filled = [o.format(out=out, root=root) for o in overrides]
    short = [] if any(o.startswith("train.steps") for o in filled) else ["train.epochs=null", "train.steps=4"]
    return ["train", *filled, *short, f"paths.output_dir={out}"]


def _in_process(args, capsys):
    """`runner <args>` through the console script's entry point in this process: (exit code, stderr)."""
    from overparam.cli.main import main

    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def _check(code, stderr, expected, row):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, f"{row}: exit {code}: {stderr[-800:]}"
    assert len(lines) == 1, f"{row}: expected one line, got: {stderr[-800:]}"
    assert lines[0].startswith("runner train: error: ") and expected in lines[0], f"{row}: {lines[0]}"


@pytest.mark.parametrize("row,overrides,expected", ROWS, ids=[row[0] for row in ROWS])
def test_each_row_in_process(outputs, capsys, row, overrides, expected):
    before = tree_digest(outputs)
    code, stderr = _in_process(_args(overrides, outputs), capsys)
    _check(code, stderr, expected, row)
    if row in VALID_NAME_LISTS:
        assert VALID_NAME_LISTS[row] in stderr.split("choose one of:")[1]
    assert tree_digest(outputs) == before, f"{row} changed the output folder"


@pytest.mark.slow
@pytest.mark.parametrize("row,overrides,expected", ROWS, ids=[row[0] for row in ROWS])
def test_each_row_through_the_runner_command(outputs, row, overrides, expected):
    before = tree_digest(outputs)
    result = runner(_args(overrides, outputs), cwd=outputs)
    _check(result.returncode, result.stderr, expected, row)
    assert tree_digest(outputs) == before, f"{row} changed the output folder"


def test_the_fixture_runs_are_real(outputs):
    assert read_json(outputs / "outputs" / "mlp16" / "run.json")["status"] == "done"


# capsys is read and cleared per example, so sharing it across examples is safe.
FAST = settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
not_a_sparsity = st.one_of(st.floats(max_value=-1e-9, allow_nan=False), st.floats(min_value=1.0, allow_nan=False),
                           st.just(math.nan), st.just(math.inf), st.just(-math.inf))


@FAST
@given(value=not_a_sparsity)
def test_any_sparsity_outside_0_1_is_refused(outputs, capsys, value):
    before = tree_digest(outputs)
    code, stderr = _in_process(["train", f"sparsity={value}", f"paths.output_dir={outputs / 'outputs'}"], capsys)
    _check(code, stderr, "sparsity=", "sparsity")
    assert tree_digest(outputs) == before


@FAST
@given(value=st.floats(max_value=-1e-12, allow_nan=False))
def test_any_negative_lr_is_refused(outputs, capsys, value):
    code, stderr = _in_process(["train", f"optim.lr={value}", f"paths.output_dir={outputs / 'outputs'}"], capsys)
    _check(code, stderr, "optim.lr=", "lr")


@FAST
@given(value=st.integers(max_value=0))
def test_any_step_count_below_one_is_refused(outputs, capsys, value):
    code, stderr = _in_process(["train", f"train.steps={value}", "train.epochs=null",
                                f"paths.output_dir={outputs / 'outputs'}"], capsys)
    _check(code, stderr, "train.steps=", "steps")


@FAST
@given(value=st.one_of(st.floats(max_value=0.0, allow_nan=False), st.floats(min_value=1.0, allow_nan=False),
                       st.just(math.nan)))
def test_any_prune_rate_outside_0_1_is_refused(outputs, capsys, value):
    code, stderr = _in_process(["train", "method=imp", f"prune.rate={value}",
                                f"paths.output_dir={outputs / 'outputs'}"], capsys)
    _check(code, stderr, "prune.rate", "prune.rate")
