"""Compare the runner's merges with mergekit's on the same float64 tensors; prints method, max |difference|.

mergekit is not a dependency of the project (too heavy for the test extra): install it apart and put it
first on PYTHONPATH for this script only, e.g.

    pip download mergekit --no-deps -d /tmp/mk && pip install --no-deps --target /tmp/ref-mergekit /tmp/mk/*.whl immutables
    PYTHONPATH=/tmp/ref-mergekit:. python scripts/compare_mergekit.py [--pins]

The models: an MLP state dict, and tiny random GPT-2 and Llama models (tests/lm/hf_models.py `save_tiny`),
each with three "fine-tuned" copies (base + a shared offset + its own noise), all in float64. mergekit's
merge methods are called on the same tensors (their registry's `merge_group`, the functions slerp/nuslerp
calls), ours through the library's merge functions. mergekit draws random drops from torch's global RNG:
here `torch.bernoulli` hands mergekit the draws our seeded generators make, so both drop the same entries.
`--pins` prints the small values tests/merge/test_mergekit_pins.py holds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "lm"))

from overparam.recipes.merge import spherical  # noqa: E402
from overparam.recipes.merge.per_tensor import combine_of, merge_tensors  # noqa: E402
from overparam.recipes.merge.task_vectors import TaskVectorMerge, merge  # noqa: E402

SEED = 3


def models() -> dict:
    """{name: (base, [three fine-tuned])} float64 state dicts."""
    from overparam.models.zoo import mlp

    torch.manual_seed(0)
    out = {"mlp": {k: v.double() for k, v in mlp((40,), 10, widths=(16, 16)).state_dict().items()}}
    from hf_models import save_tiny
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as folder:
        for kind in ("gpt2", "llama"):
            path = save_tiny(Path(folder) / kind, kind, tokenizer=False)
            out[kind] = {k: v.double() for k, v in load_file(str(path / "model.safetensors")).items()}
    generator = torch.Generator().manual_seed(1)
    result = {}
    for name, base in out.items():
        shared = {k: 0.02 * torch.randn(v.shape, generator=generator, dtype=torch.float64) for k, v in base.items()}
        tuned = [{k: v + shared[k] + 0.02 * torch.randn(v.shape, generator=generator, dtype=torch.float64)
                  for k, v in base.items()} for _ in range(3)]
        result[name] = (base, tuned)
    return result


class Draws:
    """Stands in for torch.bernoulli while mergekit sparsifies: hands it our seeded draws for (ingredient, tensor)."""

    def __init__(self, keys: list, count: int, mode: str):
        self.order = {key: index for index, key in enumerate(sorted(keys))}
        self.calls = [(i, key) for key in keys for i in range(count)]
        self.mode, self.position = mode, 0

    def __call__(self, probs, *args, **kwargs):
        index, key = self.calls[self.position]
        self.position += 1
        generator = torch.Generator().manual_seed(SEED * 1_000_003 + index * 10_007 + self.order[key])
        draws = torch.rand(probs.shape, generator=generator, dtype=torch.float64)
        kept = draws >= 1.0 - probs.double() if self.mode == "random" else draws < probs.double()
        return kept.to(probs.dtype)


def theirs_by_tensor(base: dict | None, tuned: list, name: str, keys: list, mode: str | None = None, **parameters):
    """mergekit's method `name` applied to every tensor (one TensorGroup per tensor)."""
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.base import TensorGroup

    method = registry.get(name)
    original = torch.bernoulli
    if mode:
        torch.bernoulli = Draws(keys, len(tuned), mode)
    try:
        out = {}
        for key in keys:
            tensors = ([base[key]] if base is not None else []) + [t[key] for t in tuned]
            group = TensorGroup.from_tensors(tensors, base_index=0 if base is not None else None)
            out[key] = method.merge_group(group, **parameters)
        return out
    finally:
        torch.bernoulli = original


def per_model(values, count):
    return {i + (1): v for i, v in enumerate(values[:count])}


def comparisons(base: dict, tuned: list) -> list:
    """(method, ours, theirs) of every method on one model."""
    from mergekit.merge_methods.nuslerp import nuslerp as their_nuslerp
    from mergekit.merge_methods.slerp import slerp as their_slerp

    keys = [k for k, v in base.items() if v.is_floating_point()]
    weights = [1.0, 0.5, 0.8]
    w = per_model(weights, 3)
    shared = dict(int8_mask=False)
    rows = []

    def gta(mk_name, how, mode=None, **extra):
        ours = merge(base, lambda: iter(tuned), how)
        theirs = theirs_by_tensor(base, tuned, mk_name, keys, mode, **shared, **extra)
        rows.append((mk_name if "label" not in extra else extra.pop("label"), ours, theirs))

    gta("task_arithmetic", TaskVectorMerge(weights=tuple(weights), scale=0.7), normalize=False, rescale=False,
        weight=w, density=per_model([1.0] * 3, 3), **{"lambda": 0.7})
    for consensus in ("sum", "count"):
        how = TaskVectorMerge(sparsify="magnitude", density=0.3, consensus=consensus, kept="floor", weights=tuple(weights))
        ours = merge(base, lambda: iter(tuned), how)
        from mergekit.merge_methods.generalized_task_arithmetic import ConsensusMethod, GeneralizedTaskArithmeticMerge
        from mergekit.sparsify import SparsificationMethod

        method = GeneralizedTaskArithmeticMerge(consensus_method=ConsensusMethod(consensus),
                                                sparsification_method=SparsificationMethod.magnitude,
                                                default_normalize=True, default_rescale=False, method_name="t",
                                                method_pretty_name=None, method_reference_url=None)
        from mergekit.merge_methods.base import TensorGroup

        theirs = {key: method.merge_group(TensorGroup.from_tensors([base[key]] + [t[key] for t in tuned], base_index=0),
                                          int8_mask=False, normalize=True, rescale=False, weight=w,
                                          density=per_model([0.3] * 3, 3), **{"lambda": 1.0}) for key in keys}
        rows.append((f"ties (consensus={consensus})", ours, theirs))
    layered = [[1.0, 0.2], [{"filter": "attn", "value": 0.3}, {"value": [0.5, 1.0]}], 0.8]
    from overparam.recipes.merge import gradients
    where = gradients.positions(base)
    their_setting = their_evaluate_setting()
    ours = merge(base, lambda: iter(tuned), TaskVectorMerge(sparsify="magnitude", density=0.3, consensus="sum",
                                                           kept="floor", weights=tuple(layered)))
    from mergekit.merge_methods import registry as _registry
    from mergekit.merge_methods.base import TensorGroup as _Group

    theirs = {key: _registry.get("ties").merge_group(
        _Group.from_tensors([base[key]] + [t[key] for t in tuned], base_index=0), int8_mask=False, normalize=True,
        rescale=False, density=per_model([0.3] * 3, 3), **{"lambda": 1.0},
        weight={i + 1: their_setting(key, layered[i], where[key]) for i in range(3)}) for key in keys}
    rows.append(("ties (per-layer and per-name weights)", ours, theirs))
    gta("breadcrumbs", TaskVectorMerge(sparsify="breadcrumbs", density=0.8, gamma=0.05, smallest=1 - 0.8 - 0.05,
                                       kept="floor", weights=tuple(weights)),
        normalize=False, rescale=False, weight=w, density=per_model([0.8] * 3, 3), gamma=per_model([0.05] * 3, 3),
        **{"lambda": 1.0})
    gta("dare_linear", TaskVectorMerge(sparsify="random", density=0.6, rescale="l1", weights=tuple(weights), seed=SEED),
        "random", normalize=False, rescale=True, weight=w, density=per_model([0.6] * 3, 3), **{"lambda": 1.0})
    gta("dare_ties", TaskVectorMerge(sparsify="random", density=0.6, rescale="l1", consensus="sum", normalize=False,
                                     weights=tuple(weights), seed=SEED),
        "random", normalize=False, rescale=True, weight=w, density=per_model([0.6] * 3, 3), **{"lambda": 1.0})
    for name, consensus in (("della", "sum"), ("della_linear", "none")):
        gta(name, TaskVectorMerge(sparsify="della", density=0.6, epsilon=0.15, rescale="l1", consensus=consensus,
                                  normalize=consensus != "none", weights=tuple(weights), seed=SEED),
            "della", normalize=consensus != "none", rescale=True, weight=w, density=per_model([0.6] * 3, 3),
            epsilon=per_model([0.15] * 3, 3), **{"lambda": 1.0})

    two = tuned[:2]
    ours = merge_tensors(None, two, combine_of("slerp", {"t": 0.3, "dot_threshold": 0.9995}, keys))
    theirs = {k: their_slerp(torch.tensor(0.3, dtype=torch.float64), two[0][k], two[1][k]) for k in keys}
    rows.append(("slerp (t=0.3)", ours, theirs))
    for flatten, row_wise in ((True, False), (False, False), (False, True)):
        p = {"weights": [1.0, 3.0], "row_wise": row_wise, "flatten": flatten}
        for with_base in (False, True):
            ours = merge_tensors(base if with_base else None, two, combine_of("nuslerp", p, keys))
            theirs = {}
            for k in keys:
                a, b = two[0][k], two[1][k]
                dim = 0 if row_wise else -1
                if with_base:
                    theirs[k] = base[k] + their_nuslerp(0.75, a - base[k], b - base[k], dim=dim, flatten=flatten)
                else:
                    theirs[k] = their_nuslerp(0.75, a, b, dim=dim, flatten=flatten)
            rows.append((f"nuslerp (flatten={flatten}, row_wise={row_wise}, base={with_base})", ours, theirs))
    ours = merge_tensors(None, tuned, combine_of("karcher", {"max_iter": 10, "tol": 1e-5}, keys))
    rows.append(("karcher", ours, theirs_by_tensor(None, tuned, "karcher", keys, max_iter=10, tol=1e-5)))
    for filter_wise in (False, True):
        ours = merge_tensors(base, tuned, combine_of("model_stock", {"filter_wise": filter_wise}, keys))
        rows.append((f"model_stock (filter_wise={filter_wise})", ours,
                     theirs_by_tensor(base, tuned, "model_stock", keys, filter_wise=filter_wise)))
    for topk in (1.0, 0.5):
        ours = merge_tensors(base, tuned, combine_of("sce", {"select_topk": topk}, keys))
        rows.append((f"sce (select_topk={topk})", ours,
                     theirs_by_tensor(base, tuned, "sce", keys, select_topk=topk, int8_mask=False)))
    return [(name, max(float((ours[k].double() - theirs[k].double()).abs().max()) for k in keys)) for name, ours, theirs
            in rows]


def their_evaluate_setting():
    """mergekit's evaluate_setting (config.py), run on its own: importing mergekit.config needs peft."""
    import ast
    import inspect
    from dataclasses import dataclass
    from typing import Any, Callable, Optional

    import mergekit

    path = Path(inspect.getfile(mergekit)).parent / "config.py"
    tree = ast.parse(path.read_text())
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "evaluate_setting")

    @dataclass
    class ConditionalParameter:
        value: Any
        filter: Optional[str] = None

    namespace = {"ConditionalParameter": ConditionalParameter, "Any": Any, "Callable": Callable,
                 "ParameterSetting": Any}
    exec(compile(ast.Module([function], []), str(path), "exec"), namespace)

    def convert(setting):
        if isinstance(setting, list) and setting and all(isinstance(e, dict) for e in setting):
            return [ConditionalParameter(value=convert(e["value"]), filter=e.get("filter")) for e in setting]
        return setting

    return lambda name, setting, t: namespace["evaluate_setting"](name, convert(setting), t, validate=float)


def gradient_rows(base: dict) -> list:
    """Our per-tensor values of gradient and filter settings against mergekit's evaluate_setting, at the block
    positions mergekit's planner gives (layer i of n: i / (n - 1); embeddings and head: 0)."""
    from overparam.recipes.merge import gradients

    theirs = their_evaluate_setting()
    where = gradients.positions(base)
    settings = [[0.0, 0.5, 1.0], [0.2, 0.9], [{"filter": "attn", "value": [0.0, 1.0]}, {"filter": "mlp", "value": 0.7},
                                             {"value": [0.3, 0.6, 0.1]}]]
    worst = 0.0
    for setting in settings:
        for key in base:
            ours = gradients.value_at(setting, key, where[key])
            worst = max(worst, abs(ours - theirs(key, setting, where[key])))
    return [("gradient and filter settings (value per tensor)", worst)]


def pins() -> None:
    """mergekit's outputs on the small fixed inputs the pinned tests use."""
    from pins_inputs import inputs  # tests/merge/pins_inputs.py

    base, tuned = inputs()
    keys = list(base)
    for method, extra in (("model_stock", dict(filter_wise=False)), ("model_stock", dict(filter_wise=True)),
                          ("sce", dict(select_topk=0.5, int8_mask=False)), ("karcher", dict(max_iter=10, tol=1e-5))):
        out = theirs_by_tensor(None if method == "karcher" else base, tuned, method, keys, **extra)
        print(method, extra, {k: [round(float(x), 12) for x in v.flatten()] for k, v in out.items()})
    from mergekit.merge_methods.nuslerp import nuslerp as their_nuslerp
    from mergekit.merge_methods.slerp import slerp as their_slerp

    print("slerp 0.3", {k: [round(float(x), 12) for x in their_slerp(torch.tensor(0.3, dtype=torch.float64),
                                                                       tuned[0][k], tuned[1][k]).flatten()] for k in keys})
    print("nuslerp 0.75 base", {k: [round(float(x), 12) for x in (base[k] + their_nuslerp(
        0.75, tuned[0][k] - base[k], tuned[1][k] - base[k], flatten=True)).flatten()] for k in keys})
    w = per_model([1.0, 0.5, 0.8], 3)
    for name, extra in (("ties", dict(density=per_model([0.5] * 3, 3), normalize=True, rescale=False)),
                        ("breadcrumbs", dict(density=per_model([0.5] * 3, 3), gamma=per_model([0.2] * 3, 3),
                                             normalize=False, rescale=False))):
        out = theirs_by_tensor(base, tuned, name, keys, int8_mask=False, weight=w, **extra, **{"lambda": 1.0})
        print(name, {k: [round(float(x), 12) for x in v.flatten()] for k, v in out.items()})
    from mergekit.merge_methods.base import TensorGroup
    from mergekit.merge_methods.generalized_task_arithmetic import ConsensusMethod, GeneralizedTaskArithmeticMerge
    from mergekit.sparsify import SparsificationMethod

    count = GeneralizedTaskArithmeticMerge(consensus_method=ConsensusMethod.count,
                                           sparsification_method=SparsificationMethod.magnitude, default_normalize=True,
                                           default_rescale=False, method_name="t", method_pretty_name=None,
                                           method_reference_url=None)
    out = {k: count.merge_group(TensorGroup.from_tensors([base[k]] + [t[k] for t in tuned], base_index=0),
                                int8_mask=False, normalize=True, rescale=False, weight=w, density=per_model([0.5] * 3, 3),
                                **{"lambda": 1.0}) for k in keys}
    print("ties_count", {k: [round(float(x), 12) for x in v.flatten()] for k, v in out.items()})
    # Random drops: mergekit is handed our seeded draws (Draws); it computes them in float32 on CPU.
    for name, mode, extra in (("dare_ties", "random", dict(normalize=False)),
                              ("della", "della", dict(normalize=True, epsilon=per_model([0.15] * 3, 3)))):
        out = theirs_by_tensor(base, tuned, name, keys, mode, int8_mask=False, weight=w, rescale=True,
                               density=per_model([0.6] * 3, 3), **extra, **{"lambda": 1.0})
        print(name, {k: [round(float(x), 12) for x in v.flatten()] for k, v in out.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pins", action="store_true", help="print the values the pinned tests hold")
    args = parser.parse_args()
    try:
        import mergekit  # noqa: F401
    except ImportError:
        raise SystemExit("mergekit is not importable: see this script's doc for how to install it apart")
    if args.pins:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "merge"))
        pins()
        return
    print(f"{'model':6} {'method':55} {'max |ours - mergekit|':>22}")
    for model, (base, tuned) in models().items():
        for name, difference in comparisons(base, tuned) + gradient_rows(base):
            print(f"{model:6} {name:55} {difference:22.3e}")


if __name__ == "__main__":
    main()
