"""The task-vector merge (sparsify x consensus, scope), its presets, greedy soups and snapshots, by hand."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from overparam.recipes.merge.greedy_soup import greedy
from overparam.recipes.merge.sparsify import elect_signs, random_drop, sparsify_deltas
from overparam.recipes.merge.task_vectors import TaskVectorMerge, merge, settings


def _stream(*states):
    return lambda: iter(states)


def _t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_presets_are_settings_of_the_one_merge():
    assert settings("task_arithmetic", {"lambda": 0.4}) == TaskVectorMerge(scale=0.4)
    assert settings("ties", OmegaConf.create({"density": 0.2, "lambda": 1.0})) == TaskVectorMerge(
        sparsify="magnitude", density=0.2, consensus="sign", scope="global", scale=1.0)
    assert settings("dare", {"drop": 0.9, "lambda": 1.0}, seed=4) == TaskVectorMerge(
        sparsify="random", density=1.0 - 0.9, scale=1.0, seed=4)
    assert settings("breadcrumbs", {"beta": 0.01, "gamma": 0.9, "lambda": 1.0}) == TaskVectorMerge(
        sparsify="breadcrumbs", density=1.0 - 0.01 - 0.9, gamma=0.01, smallest=0.9, scale=1.0)


def test_magnitude_global_ranks_over_all_tensors_and_tensor_within_each():
    deltas = {"a": torch.tensor([4.0, 3.0]), "b": torch.tensor([0.25, 0.5])}
    # density 0.5: per tensor one of two survives in each; globally the two largest (both in a).
    assert {k: v.tolist() for k, v in sparsify_deltas(deltas, "magnitude", 0.5, scope="tensor").items()} == {
        "a": [4.0, 0.0], "b": [0.0, 0.5]}
    assert {k: v.tolist() for k, v in sparsify_deltas(deltas, "magnitude", 0.5, scope="global").items()} == {
        "a": [4.0, 3.0], "b": [0.0, 0.0]}


def test_breadcrumbs_global_drops_the_largest_and_smallest_of_the_whole_vector():
    deltas = {"a": torch.tensor([10.0, 1.0, 2.0]), "b": torch.tensor([-0.5, 3.0])}
    # n=5, gamma 0.2 drops one largest, smallest 0.2 drops one smallest: globally 10 and -0.5 go.
    out = sparsify_deltas(deltas, "breadcrumbs", gamma=0.2, smallest=0.2, scope="global")
    assert out["a"].tolist() == [0.0, 1.0, 2.0] and out["b"].tolist() == [0.0, 3.0]
    # Per tensor: a (n=3) drops round(0.6)=1 largest and 1 smallest, b (n=2) round(0.4)=0 of each.
    out = sparsify_deltas(deltas, "breadcrumbs", gamma=0.2, smallest=0.2, scope="tensor")
    assert out["a"].tolist() == [0.0, 0.0, 2.0] and out["b"].tolist() == [-0.5, 3.0]


def test_random_drop_keeps_the_seeded_draws_above_one_minus_density_and_rescales_exactly():
    delta = torch.arange(1, 4001, dtype=torch.float64)
    dropped = random_drop(delta, 0.3, torch.Generator().manual_seed(11))
    draws = torch.rand(4000, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    kept = draws >= 1.0 - 0.3
    assert torch.equal(dropped != 0, kept)
    assert torch.equal(dropped[kept], delta[kept] / 0.3)
    assert abs(int(kept.sum()) / 4000 - 0.3) < 0.03  # about density kept (binomial sd ~0.007)


def test_dare_merge_uses_one_seeded_draw_per_ingredient_and_tensor():
    base = {"a": torch.zeros(50), "b": torch.zeros(30)}
    ones = {"a": torch.ones(50), "b": torch.ones(30)}
    twos = {"a": 2 * torch.ones(50), "b": 2 * torch.ones(30)}
    merged = merge(base, _stream(ones, twos), settings("dare", {"drop": 0.5, "lambda": 1.0}, seed=2))
    order = {"a": 0, "b": 1}
    for key, size in (("a", 50), ("b", 30)):
        expected = torch.zeros(size, dtype=torch.float64)
        for index, value in enumerate((1.0, 2.0)):
            generator = torch.Generator().manual_seed(2 * 1_000_003 + index * 10_007 + order[key])
            expected += value * (torch.rand(size, generator=generator, dtype=torch.float64) >= 0.5) / 0.5
        assert torch.equal(merged[key], expected.float())


def test_sign_election_of_the_sum_and_zero_sums_take_the_majority_sign():
    summed = {"a": torch.tensor([0.0, 3.0, 4.0]), "b": torch.tensor([0.0, -1.0])}
    # tensor scope: a's signs 0,+,+ -> the zero takes +; b's 0,- -> -.
    tensor = elect_signs(summed, "tensor")
    assert tensor["a"].tolist() == [1.0, 1.0, 1.0] and tensor["b"].tolist() == [-1.0, -1.0]
    # global scope: signs 0,+,+,0,- sum to +1: both zeros take +.
    whole = elect_signs(summed, "global")
    assert whole["a"].tolist() == [1.0, 1.0, 1.0] and whole["b"].tolist() == [1.0, -1.0]


def test_sign_consensus_averages_only_the_agreeing_entries():
    base = {"w": torch.zeros(3)}
    # deltas [1, 2, 3] and [-1, 1, 1]: sums [0, 3, 4]; the zero sum takes the tensor's majority (+),
    # so entry 0 averages {1}; entries 1 and 2 average both.
    how = TaskVectorMerge(consensus="sign", scale=2.0)
    merged = merge(base, _stream({"w": _t(1, 2, 3)}, {"w": _t(-1, 1, 1)}), how)
    assert merged["w"].tolist() == pytest.approx([2.0, 3.0, 4.0])


def test_ties_global_and_tensor_scope_differ_by_hand():
    base = {"a": torch.zeros(2), "b": torch.zeros(2)}
    first = {"a": _t(4, 3), "b": _t(0.1, 0.2)}
    second = {"a": _t(-1, 0.5), "b": _t(2, -0.3)}
    # tensor: trimmed [4,0],[0,0.2] and [-1,0],[2,0]; sums a=[3,0], b=[2,0.2]; a1's zero sum takes a's
    # majority (+) but no entry there is nonzero; a0 keeps {4} (-1 disagrees): a=[4,0], b=[2,0.2].
    per_tensor = merge(base, _stream(first, second), settings("ties", OmegaConf.create(
        {"density": 0.5, "lambda": 1.0, "scope": "tensor"})))
    assert per_tensor["a"].tolist() == pytest.approx([4.0, 0.0])
    assert per_tensor["b"].tolist() == pytest.approx([2.0, 0.2])
    # global: the two largest of each whole vector, [4,3],[0,0] and [-1,0],[2,0]; sums a=[3,3], b=[2,0]:
    # a=[4,3], b=[2,0].
    whole = merge(base, _stream(first, second), settings("ties", OmegaConf.create({"density": 0.5, "lambda": 1.0})))
    assert whole["a"].tolist() == pytest.approx([4.0, 3.0])
    assert whole["b"].tolist() == pytest.approx([2.0, 0.0])


def test_random_sparsify_with_sign_consensus_is_dare_ties():
    base = {"w": torch.zeros(400)}
    up, down = {"w": torch.ones(400)}, {"w": -3 * torch.ones(400)}
    how = TaskVectorMerge(sparsify="random", density=0.5, consensus="sign", seed=5)
    merged = merge(base, _stream(up, down), how)["w"].double()
    kept = [torch.rand(400, generator=torch.Generator().manual_seed(5 * 1_000_003 + i * 10_007), dtype=torch.float64)
            >= 0.5 for i in (0, 1)]
    # Rescaled survivors are 2 and -6; where -6 survives the sum is negative and only it is kept.
    expected = torch.where(kept[1], torch.tensor(-6.0, dtype=torch.float64),
                           torch.where(kept[0], torch.tensor(2.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)))
    assert torch.equal(merged, expected)


class _Scored:
    """A MergeSetup stand-in: val accuracy 1 - |w - 2.5| / 10 of a one-weight state."""

    recalibrate = False

    def evaluate_state(self, state, recalibrate=None):
        return {"val_accuracy": 1 - abs(float(state["w"]) - 2.5) / 10}


def test_greedy_soup_by_hand_over_states_that_sms_passes_in():
    states = [{"w": torch.tensor(1.0)}, {"w": torch.tensor(3.0)}, {"w": torch.tensor(10.0)}]
    setup = _Scored()
    rows = [setup.evaluate_state(s) for s in states]  # 0.85, 0.95, 0.25: order 1, 0, 2
    loaded = []

    def load(index):
        loaded.append(index)
        return states[index]

    # gt: mean(3, 1) = 2 scores 0.95, not above 0.95; mean(3, 10) = 6.5 scores 0.6: the soup is 3 alone.
    soup, kept = greedy(setup, rows, "gt", load=load)
    assert kept == [1] and float(soup["w"]) == 3.0 and loaded == [1, 0, 2]
    # ge: 2 is kept (0.95 == 0.95); mean(3, 1, 10) = 14/3 scores 0.783: the soup is 2.
    soup, kept = greedy(setup, rows, "ge", load=load)
    assert kept == [1, 0] and float(soup["w"]) == 2.0


def test_sms_soups_with_greedy_soups_one_implementation():
    from overparam.recipes.merge import greedy_soup, sms

    assert sms.greedy is greedy_soup.greedy
    assert not hasattr(sms, "greedy_states")


def test_snapshots_come_from_the_store_in_training_order(tmp_path):
    from overparam.store.checkpoint import save_state
    from overparam.store.snapshots import snapshots

    run = tmp_path / "run"
    for step in (100, 20, 3):
        save_state(run / "checkpoints" / f"step_{step}.safetensors", {"w": torch.zeros(1)})
    save_state(run / "checkpoints" / "level_1_step_5.safetensors", {"w": torch.zeros(1)})
    save_state(run / "level_2" / "model.safetensors", {"w": torch.zeros(1)})
    assert [ref.tag for ref in snapshots(run)] == ["step_3", "step_20", "step_100"]
    levels = tmp_path / "levels"
    for level in (10, 2):
        save_state(levels / f"level_{level}" / "model.safetensors", {"w": torch.zeros(1)})
    (levels / "level_7").mkdir()  # a level not yet committed has no model
    assert [ref.tag for ref in snapshots(levels)] == ["level_2", "level_10"]
    assert [ref.weights for ref in snapshots(levels)] == [levels / "level_2" / "model.safetensors",
                                                          levels / "level_10" / "model.safetensors"]
    assert snapshots(tmp_path / "empty") == []


def test_the_general_method_reproduces_the_ties_preset_and_scope_matters(ingredients, tmp_path):
    from overparam.cli.train import train_in_process
    from overparam.store.checkpoint import load_state

    runs = [f"base={ingredients['a']}", f"ingredients=[{ingredients['b']},{ingredients['c']}]"]
    ties_summary = train_in_process(["method=ties", *runs, "ties.density=0.3"], tmp_path / "ties")
    general = train_in_process(["method=task_vectors", *runs, "task_vectors.sparsify=magnitude",
                                "task_vectors.density=0.3", "task_vectors.consensus=sign",
                                "task_vectors.scope=global"], tmp_path / "general")
    per_tensor = train_in_process(["method=ties", *runs, "ties.density=0.3", "ties.scope=tensor"], tmp_path / "tensor")
    assert ties_summary["scope"] == "global" and per_tensor["scope"] == "tensor"
    assert general["sparsify"] == "magnitude" and general["consensus"] == "sign"
    weights = {name: load_state(tmp_path / name / "checkpoints" / "model.safetensors")
               for name in ("ties", "general", "tensor")}
    assert all(torch.equal(weights["ties"][k], weights["general"][k]) for k in weights["ties"])
    assert any(not torch.equal(weights["ties"][k], weights["tensor"][k]) for k in weights["ties"])


def test_a_bad_sparsify_or_scope_is_one_line_before_anything_is_written(ingredients, tmp_path, capsys):
    from overparam.cli.main import main as runner

    out = tmp_path / "out"
    for override in ("task_vectors.sparsify=topk", "task_vectors.scope=layer", "ties.scope=layer"):
        method = override.split(".")[0]
        code = runner(["train", f"method={method}", f"base={ingredients['a']}", f"ingredients=[{ingredients['b']}]",
                       override, f"hydra.run.dir={out}"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and override.split("=")[0] in err, err
        assert not out.exists()


def test_ties_follows_its_params_not_the_config(ingredients, tmp_path):
    """Called without Hydra, ties reads ties.density/scope from its typed params: a config that says
    density 0.9 (tensor scope) with params parsed at 0.3 (global) merges exactly as `runner train ties.density=0.3`."""
    import yaml

    from overparam.cli.train import train_in_process
    from overparam.recipes.context import Context
    from overparam.methods import methods
    from overparam.specs import all_specs
    from overparam.store import Run
    from overparam.store.checkpoint import load_state

    runs = [f"base={ingredients['a']}", f"ingredients=[{ingredients['b']},{ingredients['c']}]"]
    expected = train_in_process(["method=ties", *runs, "ties.density=0.3"], tmp_path / "runner")
    config = yaml.safe_load((tmp_path / "runner" / ".hydra" / "config.yaml").read_text())
    config.pop("hydra", None)
    params = all_specs()["ties"].parse(config)
    config["ties"] = {**config["ties"], "density": 0.9, "scope": "tensor"}  # what the config would say
    run = Run(tmp_path / "plain", config, device="cpu", precision="fp32").start()
    summary = methods()["ties"].load()(params, Context.from_dict(config, run))
    assert (summary["density"], summary["scope"]) == (0.3, "global") == (expected["density"], expected["scope"])
    assert summary["test_accuracy"] == expected["test_accuracy"] and summary["val_loss"] == expected["val_loss"]
    ours = load_state(tmp_path / "plain" / "checkpoints" / "model.safetensors")
    theirs = load_state(tmp_path / "runner" / "checkpoints" / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # ...and the config's own settings would have merged something else.
    dense = train_in_process(["method=ties", *runs, "ties.density=0.9", "ties.scope=tensor"], tmp_path / "dense")
    other = load_state(tmp_path / "dense" / "checkpoints" / "model.safetensors")
    assert dense["density"] == 0.9 and any(not torch.equal(ours[k], other[k]) for k in ours)
