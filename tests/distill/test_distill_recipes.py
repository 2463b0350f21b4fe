"""Every distillation method end to end on a tiny MLP, plus KD's exactness properties."""

from __future__ import annotations

import pytest
import torch

from overparam.cli.train import train_in_process
from overparam.store.checkpoint import load_state

from saved_model import saved_accuracy
from tiny_runs import TINY


def weights(run_dir):
    return load_state(run_dir / "checkpoints" / "model.safetensors")


def test_kd_with_alpha_zero_is_exactly_plain_training(tmp_path, dense_run):
    dense_dir, dense_summary = dense_run
    summary = train_in_process([*TINY, "method=kd", "kd.alpha=0.0", "teacher.untrained=true"], tmp_path / "kd0")
    assert summary["test_accuracy"] == dense_summary["test_accuracy"]
    assert summary["test_loss"] == dense_summary["test_loss"]
    plain, distilled = weights(dense_dir), weights(tmp_path / "kd0")
    assert plain.keys() == distilled.keys()
    assert all(torch.equal(plain[k], distilled[k]) for k in plain)


def test_kd_from_a_run_teacher_trains_and_logs_each_term(tmp_path, dense_run):
    dense_dir, dense_summary = dense_run
    out = tmp_path / "kd"
    summary = train_in_process([*TINY, "method=kd", f"teacher.from={dense_dir}", "kd.alpha=0.5",
                                "kd.baseline=true"], out)
    assert summary["teacher_test_accuracy"] == pytest.approx(dense_summary["test_accuracy"])
    assert summary["test_accuracy"] == pytest.approx(saved_accuracy(out))
    # The baseline is the same student trained alone: identical to the dense run.
    assert summary["scratch_test_accuracy"] == dense_summary["test_accuracy"]
    from overparam.store.run import Run

    rows = Run(out, {}).read_metrics()
    logged = {row["metric"] for row in rows if row["split"] == "train"}
    assert {"loss_kd", "loss_ce"} <= logged


def test_the_teacher_never_changes(dense_run):
    from omegaconf import OmegaConf

    from overparam.cli.train import compose_checked
    from overparam.recipes.common import prepare
    from overparam.recipes.distill.kd import distill
    from overparam.store.load import load_run_model

    dense_dir, _ = dense_run
    cfg = OmegaConf.create(compose_checked([*TINY, "method=kd"]))
    setup = prepare(cfg)
    teacher, _ = load_run_model(dense_dir, data=setup.data)
    teacher.train()  # distill must put it in eval mode and keep it frozen
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = setup.new_model()
    distill(student, teacher, setup, None, alpha=0.9, temperature=4.0, tag="kd")
    assert not teacher.training
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())


def test_kd_into_a_sparse_student_keeps_its_mask(tmp_path, dense_run):
    from overparam.store.checkpoint import save_state

    dense_dir, _ = dense_run
    # A lottery-ticket-shaped level: the dense run's weights with a fixed half mask on every layer.
    ticket = tmp_path / "ticket"
    import shutil

    shutil.copytree(dense_dir, ticket)
    state = weights(ticket)
    generator = torch.Generator().manual_seed(0)
    for key in [k for k in list(state) if k.endswith(".weight")]:
        state[f"{key}_mask"] = (torch.rand(state[key].shape, generator=generator) < 0.5).float()
        state[key] = state[key] * state[f"{key}_mask"]
    (ticket / "level_1").mkdir()
    save_state(ticket / "level_1" / "model.safetensors", state)
    out = tmp_path / "kd_sparse"
    summary = train_in_process([*TINY, "method=kd", f"teacher.from={dense_dir}", f"student.from={ticket}@level_1"], out)
    trained = weights(out)
    for key in [k for k in state if k.endswith(".weight_mask")]:
        assert torch.equal(trained[key], state[key])
        weight = trained[key[: -len("_mask")]]
        assert torch.count_nonzero(weight[state[key] == 0]) == 0
    density = sum(float(state[k].sum()) for k in state if k.endswith("_mask")) / sum(
        state[k].numel() for k in state if k.endswith("_mask"))
    assert summary["sparsity"] == pytest.approx(1 - density)


def test_self_distill_writes_one_row_per_generation(tmp_path):
    summary = train_in_process([*TINY, "method=self_distill", "self_distill.generations=2"], tmp_path / "sd")
    assert [row["generation"] for row in summary["rows"]] == [0, 1, 2]
    assert summary["test_accuracy"] == summary["rows"][-1]["test_accuracy"]


def test_random_teacher_reports_both_probes(tmp_path):
    summary = train_in_process([*TINY, "method=random_teacher", "random_teacher.probe_epochs=0.5",
                                "random_teacher.student_init_noise=0.5"], tmp_path / "rt")
    for role in ("teacher", "student"):
        assert 0.0 < summary[f"{role}_probe_test_accuracy"] <= 1.0
    assert summary["test_accuracy"] == summary["student_probe_test_accuracy"]
    assert summary["probe_gain"] == pytest.approx(summary["student_probe_test_accuracy"]
                                                  - summary["teacher_probe_test_accuracy"])


@pytest.mark.parametrize("distance", ["linear", "cka"])
def test_feature_kd_guides_an_mlp_by_a_cnn(tmp_path, distance):
    summary = train_in_process([*TINY, "method=feature_kd", "teacher.model={name:cnn1d,_target_:overparam.models.zoo.cnn1d,channels:8}",
                                "teacher.untrained=true", f"feature_kd.distance={distance}",
                                "feature_kd.layers=[fc0:conv0,embedding:embedding]"], tmp_path / distance)
    assert summary["test_accuracy"] == pytest.approx(saved_accuracy(tmp_path / distance))
    assert summary["teacher_parameters"] < 2000
    saved = weights(tmp_path / distance)
    assert not any(k.startswith("maps") or k.startswith("student.") for k in saved)  # only the student is saved


def test_feature_kd_rejects_an_unknown_layer(tmp_path):
    from overparam.errors import UserError

    with pytest.raises(UserError, match="no module 'nope'"):
        train_in_process([*TINY, "method=feature_kd", "teacher.untrained=true", "feature_kd.layers=[nope:fc0]"],
                         tmp_path / "bad")


@pytest.mark.slow  # three IMP lineages of two levels: about 20 s of CPU
def test_kd_with_prune_imp_trains_imp_levels_on_the_kd_loss(tmp_path):
    prune = ["sparsity=0.5", "prune.rate=0.5"]
    plain = train_in_process([*TINY, "method=imp", "prune.cache=false", *prune], tmp_path / "imp")
    # alpha = 0: the KD loss is the cross-entropy, so every level must match plain IMP exactly.
    same = train_in_process([*TINY, "method=kd", "+prune=imp", "kd.alpha=0.0", "teacher.untrained=true", *prune],
                            tmp_path / "kd0")
    assert [row["test_accuracy"] for row in same["levels"]] == [row["test_accuracy"] for row in plain["levels"]]
    distilled = train_in_process([*TINY, "method=kd", "+prune=imp", "teacher.untrained=true", *prune],
                                 tmp_path / "kd")
    assert [row["level"] for row in distilled["levels"]] == [0, 1]
    assert distilled["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert (tmp_path / "kd" / "level_1" / "mask.safetensors").is_file()
    assert distilled["levels"][1]["test_accuracy"] != plain["levels"][1]["test_accuracy"]
