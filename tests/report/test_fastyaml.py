"""The fast reader of Hydra's YAML gives exactly what PyYAML gives, or declines (None)."""

from __future__ import annotations

import math

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from overparam.report.fastyaml import parse

keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=False, width=32), st.text(max_size=12),
    st.sampled_from(["mlp", "${sparsity}", "${oc.env:HOME}/x", "overparam.models.zoo.mlp", "yes", "1e-5",
                     "0.5", "2026-11-23", "a: b", "-x", "[1, 2]", "it's", "~", "null", ""]),
)
trees = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(keys, inner, max_size=4)), max_leaves=25)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(keys, trees, min_size=1, max_size=6))
def test_agrees_with_pyyaml_on_dumped_configs(tree):
    for text in (yaml.safe_dump(tree, sort_keys=False), OmegaConf.to_yaml(OmegaConf.create(tree))):
        fast = parse(text)
        if fast is not None:
            assert _same(fast, yaml.safe_load(text)), text


def test_reads_a_hydra_config_without_pyyaml():
    text = (
        "seed: 0\nsparsity: 0.9\ntrain:\n  steps: null\n  epochs: 2\noptim:\n  lr: 5.0e-05\n  betas:\n  - 0.9\n"
        "  - 0.999\n  schedule: cosine\npaths:\n  data_dir: ${oc.env:OVERPARAM_DATA_DIR,${oc.env:HOME}/.cache}\n"
        "model:\n  name: mlp\n  widths: []\nflag: true\nclaims:\n- text: CNN beats MLP\n  expect: acc(model=cnn1d) > 0.5\n"
    )
    parsed = parse(text)
    assert parsed == yaml.safe_load(text)
    assert parsed["optim"]["betas"] == [0.9, 0.999] and parsed["optim"]["lr"] == 5e-05
    assert parse("a: \"quoted\"\n") is None  # double quotes: left to PyYAML
    assert parse("a: |\n  block\n") is None
