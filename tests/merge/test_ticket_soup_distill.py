"""The composition route in one command: `runner reproduce experiment=ticket_soup_distill` runs IMP ticket ->
fine-tuned copies -> greedy soup -> KD into its --out folder and checks the claims.

At the preset's own settings: the whole chain takes about as long as a tiny one (the four interpreters' start
dominates, ~17 s), and only there does the distillation claim hold (a 16-unit MLP trained 30 steps per stage
gives a student below the ticket trained alone, 0.233 vs 0.249)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from overparam.store.checkpoint import load_state

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scaleout"))
from scaleout_helpers import runner  # noqa: E402


def _masks(path):
    return {k: v for k, v in load_state(path).items() if k.endswith("_mask")}


def test_ticket_soup_distill_reproduces_in_one_command_and_keeps_the_tickets_mask(tmp_path):
    out = tmp_path / "tsd"
    result = runner(["reproduce", "experiment=ticket_soup_distill", "--out", str(out)], cwd=tmp_path,
                    timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    # Everything is built under --out (the ticket's levels too: no level cache beside it).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tsd"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["copies", "distill", "soup", "ticket"]
    claims = (out / "claims.md").read_text()
    assert claims.count("PASS") == 3 and "3/3 claims passed" in claims
    soup = json.loads((out / "soup" / "summary.json").read_text())
    assert soup["ingredients"] == 3 and soup["sparsity"] == 0.75
    assert soup["val_accuracy"] >= soup["best_ingredient_val_accuracy"]
    ticket = _masks(out / "ticket" / "level_2" / "model.safetensors")
    distilled = sorted((out / "distill").glob("[0-9]"))
    assert len(distilled) == 3
    for run in distilled:
        summary = json.loads((run / "summary.json").read_text())
        assert summary["sparsity"] == 0.75 and summary["test_accuracy"] > summary["scratch_test_accuracy"]
        config = json.loads((run / "run.json").read_text())["config"]
        assert config["teacher"]["from"] == str(out / "soup")
        assert config["student"]["from"] == f"{out / 'ticket'}@level_2"
    for path in (out / "copies" / "0" / "checkpoints" / "model.safetensors",
                 out / "soup" / "checkpoints" / "model.safetensors",
                 *(run / "checkpoints" / "model.safetensors" for run in distilled)):
        masks = _masks(path)
        assert masks.keys() == ticket.keys()
        for key in ticket:
            assert torch.equal(masks[key] != 0, ticket[key] != 0), (path, key)
