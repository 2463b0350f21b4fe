"""Run store: atomic writes, nested safetensors checkpoints, corruption detection, config hashes."""

from __future__ import annotations

import pytest
import torch

from overparam.errors import UserError
from overparam.store import Run, load_state, save_state
from overparam.store.run import config_hash


def test_nested_state_round_trips_exactly(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 7,
             "best": {"val": {"loss": float("inf")}}, "pair": (1, "a"), "none": None}
    save_state(tmp_path / "c.safetensors", state)
    loaded = load_state(tmp_path / "c.safetensors")
    assert loaded["step"] == 7 and loaded["pair"] == (1, "a") and loaded["none"] is None
    assert loaded["best"]["val"]["loss"] == float("inf")
    assert set(loaded["optimizer"]["state"]) == {0, 1}  # integer keys survive
    fresh = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    fresh.load_state_dict(loaded["optimizer"])
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["model"][key], value)


def test_a_model_checkpoint_is_a_plain_safetensors_file(tmp_path):
    from safetensors.torch import load_file

    model = torch.nn.Linear(3, 2)
    save_state(tmp_path / "m.safetensors", model.state_dict())
    plain = load_file(str(tmp_path / "m.safetensors"))
    assert set(plain) == {"weight", "bias"}


def test_corrupt_and_truncated_checkpoints_are_detected(tmp_path):
    run = Run(tmp_path / "run", {"seed": 0}).start()
    run.save_checkpoint("a", {"x": torch.arange(100.0)})
    assert run.checkpoint_is_good("a")
    path = run.checkpoint_path("a")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert not run.checkpoint_is_good("a")
    with pytest.raises(UserError, match="missing or corrupt"):
        run.load_checkpoint("a")
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(UserError, match="corrupt checkpoint"):
        load_state(path)


def test_config_hash_ignores_paths_and_null_options():
    base = {"seed": 0, "optim": {"lr": 0.1}, "paths": {"output_dir": "a"}}
    assert config_hash(base) == config_hash({**base, "paths": {"output_dir": "b"}})
    assert config_hash(base) == config_hash({**base, "new_option": None})
    assert config_hash({**base, "train": {"epochs": 3}}) == \
        config_hash({**base, "train": {"epochs": 3, "checkpoint_seconds": 5}})
    assert config_hash(base) != config_hash({**base, "seed": 1})
    # Pinned: a change here means every existing run's identity changed.
    assert config_hash({"seed": 0, "optim": {"lr": 0.1}}) == "b016cff0c53b7cef"


def test_reopening_a_run_with_another_config_is_refused(tmp_path):
    Run(tmp_path / "run", {"seed": 0}).start()
    with pytest.raises(UserError, match="another config"):
        Run(tmp_path / "run", {"seed": 1}).start()


def test_metrics_truncation_drops_rows_after_a_resume_point(tmp_path):
    run = Run(tmp_path / "run", {"seed": 0}).start()
    for step in (0, 10, 20):
        run.log(step, "test", {"accuracy": step / 100}, level=None)
    run.log(0, "test", {"accuracy": 0.5}, level=1)
    run.truncate_metrics(None, 10)
    assert [(r["level"], r["step"]) for r in run.read_metrics()] == [(None, 0), (None, 10)]


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    from overparam.store import atomic_write_json, read_json

    atomic_write_json(tmp_path / "a.json", {"x": float("nan")})
    assert read_json(tmp_path / "a.json") == {"x": "nan"}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_resume_point_in_either_slot_counts_and_killed_writes_leave_no_debris(tmp_path):
    run = Run(tmp_path / "run", {"seed": 0}).start()
    assert not run.has_resume_point("resume_x")
    run.save_resume_point("resume_x", {"step": 1})
    run.save_resume_point("resume_x", {"step": 2})  # lands in the .alt slot
    run.checkpoint_path("resume_x").write_bytes(b"spoilt by a kill after its rename")
    assert not run.checkpoint_is_good("resume_x") and run.has_resume_point("resume_x")
    assert run.load_resume_point("resume_x")["step"] == 2
    debris = [run.root / "level_2" / ".model.safetensors.abc.tmp", run.root / "level_2" / ".mask.safetensors.incoming",
              run.root / "ticket" / "level_0" / ".summary.json.q.tmp", run.checkpoints / ".model.safetensors.z.tmp"]
    kept = [run.root / "level_2" / "model.safetensors", run.root / ".cache" / "imp" / "k" / ".level_1.x.tmp"]
    for path in debris + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    Run(tmp_path / "run", {"seed": 0}).start()
    assert not any(p.exists() for p in debris) and all(p.exists() for p in kept)
