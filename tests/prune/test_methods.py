"""Every prune method end to end on a tiny model: exact sparsity, zero masked weights, summaries."""

from __future__ import annotations

import json
import math

import pytest
import torch

from overparam.recipes.shared import prunable as common
from overparam.recipes.shared.lottery import plan_levels
from overparam.specs import all_specs
from overparam.store.checkpoint import load_state
from overparam.store.levels import LevelCache

from saved_model import saved_accuracy

# The tiny MLP: 40 -> 16 -> 10 has 800 prunable weights.
PRUNABLE = 40 * 16 + 16 * 10


def _masked_weights_are_zero(state: dict) -> bool:
    masks = {k[: -len("_mask")]: v for k, v in state.items() if k.endswith(".weight_mask")}
    assert masks, "no masks in the state"
    return all(bool((state[name][mask == 0] == 0).all()) for name, mask in masks.items())


def _live(state: dict) -> int:
    return sum(int(v.count_nonzero()) for k, v in state.items() if k.endswith(".weight_mask"))


def test_imp_reaches_the_target_exactly_with_every_level_stored(train_tiny):
    summary, out = train_tiny("imp", "method=imp", "sparsity=0.9")
    plan = plan_levels(PRUNABLE, 0.2, 0.9)
    assert summary["remaining_weights"] == 80 and summary["sparsity"] == pytest.approx(0.9)
    assert [row["remaining_weights"] for row in summary["levels"]] == plan.counts
    for level, count in enumerate(plan.counts):
        folder = out / f"level_{level}"
        state = load_state(folder / "model.safetensors")
        assert _live(state) == count
        assert _masked_weights_are_zero(state)
        masks = load_state(folder / "mask.safetensors")
        assert sum(int(m.count_nonzero()) for m in masks.values()) == count
        level_summary = json.loads((folder / "summary.json").read_text())
        for key in ("test_accuracy", "val_accuracy", "test_loss", "val_loss", "early_stop_step", "flops",
                    "remaining_params", "layer_sparsity/fc0"):
            assert key in level_summary
    final = load_state(out / "checkpoints" / "model.safetensors")
    assert _live(final) == 80 and _masked_weights_are_zero(final)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {row["level"] for row in rows} == set(range(plan.levels))


def test_a_second_job_of_a_sparsity_sweep_trains_no_level_the_first_trained(train_tiny, monkeypatch):
    from overparam.recipes.shared import lottery as imp

    trained: list[tuple[str, int]] = []
    original = imp.train_level

    def spy(ctx, run, level, model, **kwargs):
        trained.append((run.root.name, level))
        return original(ctx, run, level, model, **kwargs)

    monkeypatch.setattr(imp, "train_level", spy)
    first, _ = train_tiny("s08", "method=imp", "sparsity=0.8")
    second, out = train_tiny("s09", "method=imp", "sparsity=0.9")
    first_levels = {level for name, level in trained if name == "s08"}
    second_levels = {level for name, level in trained if name == "s09"}
    assert first_levels == set(range(len(first["levels"])))
    # 0.8 ends at its own (non-canonical) level 8 = 160 weights; levels 0-7 are shared and 0.9 trains only
    # what 0.8 never had: canonical levels 8-10 (134, 107, 86 weights) and its own last level 11.
    assert second_levels == {8, 9, 10, 11}
    assert not second_levels & (first_levels - {8})
    assert [r["test_accuracy"] for r in second["levels"][:8]] == [r["test_accuracy"] for r in first["levels"][:8]]
    assert torch.equal(load_state(out / "level_7" / "model.safetensors")["fc0.weight"],
                       load_state(out.parent / "s08" / "level_7" / "model.safetensors")["fc0.weight"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {row["level"] for row in rows} == set(range(12))  # cached levels' curves are replayed


def test_a_restarted_imp_run_skips_complete_levels(compose_tiny, monkeypatch, tmp_path):
    from overparam.recipes.context import call
    from overparam.recipes.prune.imp import run
    from overparam.recipes.shared import lottery as imp
    from overparam.store import Run

    cfg, container = compose_tiny("method=imp", "sparsity=0.5", "prune.cache=false")
    first = call(run, container, Run(tmp_path / "restart", container).start())
    calls = []
    monkeypatch.setattr(imp, "train_level", lambda *a, **k: calls.append(a[2]))
    again = call(run, container, Run(tmp_path / "restart", container).start())
    assert calls == []
    assert again["levels"] == first["levels"]


def test_rewind_init_restores_the_exact_initial_values_of_kept_weights(train_tiny, compose_tiny):
    from overparam.recipes.common import prepare
    from overparam.recipes.shared.lottery import Lineage, Lottery
    from overparam.settings import Settings
    from overparam.store import Run

    summary, out = train_tiny("ticket", "method=imp", "sparsity=0.5")
    cfg, container = compose_tiny("method=imp", "sparsity=0.5")
    params = all_specs()["imp"].parse(container)
    settings = Settings.resolved(container)
    ctx = Lottery.from_params(params, settings, prepare(settings), oneshot=False)
    lineage = Lineage(ctx, Run(out, container), plan_levels(PRUNABLE, 0.2, 0.5), LevelCache(None))
    mask = load_state(out / "level_3" / "mask.safetensors")
    model, start, _ = lineage.start_model(3, mask)
    init = ctx.fresh_model().state_dict()
    assert start == 0
    for name, weight in common.weights_of(model).items():
        assert torch.equal(weight.detach(), init[name] * mask[name])
        assert int(weight.count_nonzero()) == int(mask[name].sum())
    # ...and the mask of level 3 is the magnitude mask of trained level 2.
    trained = load_state(out / "level_2" / "model.safetensors")
    recomputed = ctx.masks_after(trained, ctx.fresh_model(), lineage.plan.counts[3])
    assert all(torch.equal(recomputed[k], mask[k]) for k in mask)


def test_late_rewinding_trains_the_rest_of_the_schedule_from_the_rewind_point(train_tiny):
    summary, out = train_tiny("late", "method=imp", "sparsity=0.36", "rewind=4it")
    assert (out / "level_0" / "rewind.safetensors").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    level1_train_steps = sorted({r["step"] for r in rows if r["level"] == 1 and r["split"] == "train"})
    assert level1_train_steps == [6, 12]  # steps 5..12 of the 12-step schedule; evaluated at 6 and 12
    assert summary["levels"][1]["early_stop_step"] >= 4
    assert summary["remaining_weights"] == math.floor(PRUNABLE * 0.64 + 0.5)


@pytest.mark.parametrize("control", ["random_reinit", "random_mask", "random_prune"])
def test_controls_run_on_the_ticket_levels(train_tiny, control):
    ticket, ticket_dir = train_tiny("ticket", "method=imp", "sparsity=0.5")
    summary, out = train_tiny(control, "method=imp", "sparsity=0.5", f"control={control}")
    assert [r["remaining_weights"] for r in summary["levels"]] == [r["remaining_weights"] for r in ticket["levels"]]
    for level in range(1, len(ticket["levels"])):
        mine = load_state(out / f"level_{level}" / "mask.safetensors")
        theirs = load_state(ticket_dir / f"level_{level}" / "mask.safetensors")
        assert _masked_weights_are_zero(load_state(out / f"level_{level}" / "model.safetensors"))
        if control == "random_reinit":
            assert all(torch.equal(mine[k], theirs[k]) for k in mine)
            assert not torch.equal(load_state(out / f"level_{level}" / "model.safetensors")["fc0.bias"],
                                   load_state(ticket_dir / f"level_{level}" / "model.safetensors")["fc0.bias"])
        else:
            assert any(not torch.equal(mine[k], theirs[k]) for k in mine)
        if control == "random_mask":
            assert {k: int(v.sum()) for k, v in mine.items()} == {k: int(v.sum()) for k, v in theirs.items()}
    if control != "random_reinit":
        assert summary["levels"][0]["test_accuracy"] == ticket["levels"][0]["test_accuracy"]


@pytest.mark.parametrize("overrides", [
    ["method=imp", "sparsity=0.5", "rewind=none", "retrain.lr_schedule=ft"],
    ["method=imp", "sparsity=0.5", "rewind=none", "retrain.lr_schedule=clr", "prune.scope=layerwise"],
    ["method=imp", "sparsity=0.7", "prune.output_rate=0.5"],
    ["method=imp", "sparsity=0.7", "prune.output_rate=0"],
    ["method=oneshot", "sparsity=0.8"],
    ["method=oneshot", "sparsity=0.8", "rewind=1ep", "train.steps=null", "train.epochs=2", "train.eval_every=null"],
    ["method=random_prune", "sparsity=0.8"],
    ["method=random_prune", "sparsity=0.8", "prune.distribution=erk"],
    ["method=snip", "sparsity=0.8"],
    ["method=grasp", "sparsity=0.8", "prune.scope=layerwise"],
    ["method=synflow", "sparsity=0.8", "prune.rounds=10"],
], ids=lambda o: " ".join(o))
def test_unstructured_methods_end_exactly_at_the_target(train_tiny, overrides):
    summary, out = train_tiny("run", *overrides)
    sparsity = float(next(o for o in overrides if o.startswith("sparsity=")).split("=")[1])
    prunable = PRUNABLE - (160 if "prune.output_rate=0" in overrides else 0)
    assert summary["remaining_weights"] == math.floor(prunable * (1 - sparsity) + 0.5)
    assert summary["prunable_weights"] == prunable
    state = load_state(out / "checkpoints" / "model.safetensors")
    assert _masked_weights_are_zero(state)
    assert summary["test_accuracy"] == pytest.approx(saved_accuracy(out)) and summary["flops"] < summary["dense_flops"]
    if "prune.output_rate=0.5" in overrides:
        assert summary["layer_sparsity/fc_out"] < summary["layer_sparsity/fc0"]


@pytest.mark.parametrize("schedule", ["oneshot", "gradual"])
def test_nm_masks_every_eligible_layer_two_of_four(train_tiny, schedule):
    summary, out = train_tiny("nm", "method=nm", f"nm.schedule={schedule}")
    state = load_state(out / "checkpoints" / "model.safetensors")
    for name in ("fc0", "fc_out"):
        mask = state[f"{name}.weight_mask"]
        assert (mask.reshape(mask.shape[0], -1, 4).sum(-1) == 2).all()
    assert _masked_weights_are_zero(state)
    assert summary["sparsity"] == 0.5 and summary["nm"] == "2:4"


@pytest.mark.parametrize("shrink", ["false", "true"])
def test_channel_pruning_removes_whole_neurons(train_tiny, shrink):
    summary, out = train_tiny("channel", "method=channel", "sparsity=0.5", f"channel.shrink={shrink}")
    state = load_state(out / "checkpoints" / "model.safetensors")
    rows_alive = state["fc0.weight_mask"].sum(dim=1) > 0
    assert int(rows_alive.sum()) == 8 == summary["channels_kept"]
    assert (state["fc_out.weight_mask"][:, ~rows_alive] == 0).all()
    assert (state["fc0.weight"][~rows_alive] == 0).all()
    assert summary["remaining_weights"] == 8 * 40 + 8 * 10
    if shrink == "true":
        assert summary["shrunk_parameters"] == 8 * 40 + 8 + 8 * 10 + 10
        assert summary["shrunk_flops"] == summary["flops"]


def test_shrinking_keeps_the_function_exactly():
    import copy

    from overparam.models.zoo import cnn1d, mlp
    from overparam.recipes.prune import channel

    for model, shape in ((mlp((40,), 10, widths=[12, 8]), (40,)), (cnn1d((40,), 10, channels=6), (40,))):
        model = common.make_prunable(model, exclude_output=False)
        keep = channel.channel_keep(model, 0.5, "global")
        common.apply_masks_by_name(model, channel.channel_masks(model, keep))
        small = channel.shrink(copy.deepcopy(model), keep)
        x = torch.randn(5, *shape)
        assert torch.allclose(model(x), small(x), atol=1e-6)
        restored = copy.deepcopy(model)
        channel.expand_into(restored, small, keep)
        assert torch.allclose(restored(x), model(x), atol=1e-6)


@pytest.mark.parametrize("score", ["el2n", "grand", "random"])
def test_data_diet_keeps_the_chosen_fraction(train_tiny, score):
    summary, _ = train_tiny("diet", "method=data_diet", f"diet.score={score}", "diet.keep=0.25", "diet.epochs=0.2",
                            "diet.seeds=1")
    assert summary["examples_kept"] == 900 and summary["examples_total"] == 3600


def test_el2n_and_grand_rank_a_misfit_example_highest():
    from overparam.recipes.prune.data_diet import el2n, grand

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3, 4) * 5)
        model.bias.zero_()
    x = torch.eye(3, 4)
    y = torch.tensor([0, 1, 0])  # the last example is labelled against the model's confident prediction
    assert int(el2n(model, x, y, 3).argmax()) == 2
    assert int(grand(model, x, y).argmax()) == 2


def _mlp_with_a_quiet_layer():
    """The default MLP (256, 256) on MNIST-1D's 40 inputs, its second layer's weights 100x smaller:
    global L1 ranking then prefers every first-layer unit to any second-layer one."""
    from overparam.models.zoo import mlp

    model = common.make_prunable(mlp((40,), 10, widths=[256, 256]), exclude_output=False)
    with torch.no_grad():
        model.fc1.weight.mul_(0.01)
    return model


def test_channel_default_keeps_every_layer_wide():
    from overparam.cli.train import compose_checked
    from overparam.recipes.prune import channel

    cfg = compose_checked(["method=channel", "sparsity=0.5"])["channel"]
    assert cfg["scope"] == "layerwise" and cfg["min_fraction"] == 0.25
    keep = channel.channel_keep(_mlp_with_a_quiet_layer(), 0.5, cfg["scope"], cfg["min_fraction"])
    assert {name: int(k.sum()) for name, k in keep.items()} == {"fc0": 128, "fc1": 128}
    # Global ranking with the default floor keeps a quarter of the quiet layer, and still removes half in all.
    keep = channel.channel_keep(_mlp_with_a_quiet_layer(), 0.5, "global", cfg["min_fraction"])
    assert {name: int(k.sum()) for name, k in keep.items()} == {"fc0": 192, "fc1": 64}
    # Without a floor, global ranking collapses the quiet layer to one unit (what the floor prevents).
    keep = channel.channel_keep(_mlp_with_a_quiet_layer(), 0.5, "global", 0.0)
    assert {name: int(k.sum()) for name, k in keep.items()} == {"fc0": 255, "fc1": 1}
