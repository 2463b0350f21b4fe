"""`runner export`: a plain state dict that loads strict=True into the unmasked model and computes the same outputs."""

from __future__ import annotations

import json
import pytest
import torch
from safetensors.torch import load_file

from overparam.cli.main import main as runner
from overparam.cli.train import train_in_process

from tiny_runs import TINY

# A tiny MLP (40 -> 16 -> 10: 800 weights, 26 biases), as in the tune tests.


def _plain_model(widths):
    from omegaconf import OmegaConf

    from overparam.models import build_model

    return build_model(OmegaConf.create({"name": "mlp", "_target_": "overparam.models.zoo.mlp", "widths": widths}),
                       (40,), 10, seed=123)


def _outputs_of_run(ref, x):
    from overparam.store.load import load_run_model

    model, _ = load_run_model(ref)
    model.eval()
    with torch.no_grad():
        return model(x)


@pytest.fixture(scope="module")
def ticket(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "ticket"
    train_in_process([*TINY, "method=oneshot", "sparsity=0.8"], out)
    return out


def test_export_of_a_level_loads_strict_into_the_unmasked_model(tmp_path, ticket, capsys):
    target = tmp_path / "ticket.safetensors"
    assert runner(["export", f"{ticket}@level_1", "--to", str(target)]) == 0
    assert "80.0% of prunable weights zero" in capsys.readouterr().out
    state = load_file(str(target))
    assert sorted(state) == ["fc0.bias", "fc0.weight", "fc_out.bias", "fc_out.weight"]  # no *_mask keys
    model = _plain_model([16])
    model.load_state_dict(state, strict=True)
    weights = state["fc0.weight"].numel() + state["fc_out.weight"].numel()
    zeros = weights - int(state["fc0.weight"].count_nonzero()) - int(state["fc_out.weight"].count_nonzero())
    assert zeros == 800 - 160
    x = torch.randn(32, 40, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), _outputs_of_run(f"{ticket}@level_1", x), atol=1e-6)
    meta = json.loads((tmp_path / "ticket.json").read_text())
    summary = json.loads((ticket / "summary.json").read_text())
    assert meta["level"] == "level_1" and meta["method"] == "oneshot" and meta["shrunk"] is False
    assert meta["sparsity"] == pytest.approx(0.8) and meta["nonzero"] == 186 and meta["parameters"] == 826
    assert meta["metrics"]["test_accuracy"] == summary["levels"][1]["test_accuracy"]
    assert meta["model"]["widths"] == [16] and meta["shapes"]["fc0.weight"] == [16, 40]


def test_the_dense_level_and_the_final_weights_differ(tmp_path, ticket):
    assert runner(["export", f"{ticket}@level_0", "--to", str(tmp_path / "dense.safetensors")]) == 0
    assert runner(["export", str(ticket), "--to", str(tmp_path / "final.safetensors")]) == 0
    dense, final = load_file(str(tmp_path / "dense.safetensors")), load_file(str(tmp_path / "final.safetensors"))
    assert int(dense["fc0.weight"].count_nonzero()) == 640
    assert int(final["fc0.weight"].count_nonzero()) + int(final["fc_out.weight"].count_nonzero()) == 160


def test_channel_pruned_run_is_exported_shrunk(tmp_path):
    run_dir = tmp_path / "channel"
    train_in_process([*TINY, "method=channel", "sparsity=0.5"], run_dir)
    target = tmp_path / "small.safetensors"
    assert runner(["export", str(run_dir), "--to", str(target)]) == 0
    state = load_file(str(target))
    meta = json.loads(target.with_suffix(".json").read_text())
    assert meta["shrunk"] is True and meta["channels_kept"] == {"fc0": 8} and meta["model"]["widths"] == [8]
    assert list(state["fc0.weight"].shape) == [8, 40] and list(state["fc_out.weight"].shape) == [10, 8]
    small = _plain_model([8])
    small.load_state_dict(state, strict=True)
    small.eval()
    x = torch.randn(32, 40, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(small(x), _outputs_of_run(run_dir, x), atol=1e-5)
    full = tmp_path / "full.safetensors"
    assert runner(["export", str(run_dir), "--to", str(full), "--no-shrink"]) == 0
    assert list(load_file(str(full))["fc0.weight"].shape) == [16, 40]


def test_bad_export_targets_are_one_line_and_write_nothing(tmp_path, ticket, capsys):
    existing = tmp_path / "there.safetensors"
    existing.write_bytes(b"keep me")
    assert runner(["export", str(ticket), "--to", str(existing)]) == 2
    assert existing.read_bytes() == b"keep me" and not (tmp_path / "there.json").exists()
    assert runner(["export", f"{ticket}@level_7", "--to", str(tmp_path / "a.safetensors")]) == 2
    assert runner(["export", str(ticket), "--to", str(tmp_path / "a.pt")]) == 2
    assert runner(["export", str(tmp_path / "nowhere"), "--to", str(tmp_path / "b.safetensors")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 4 and all(line.startswith("runner export: error: ") for line in errors)
    assert "exists; give --force" in errors[0] and "no level_7" in errors[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["there.safetensors"]
