"""`runner reproduce experiment=<preset>` also reads the runs a preset builds on (ticket_soup_distill)."""

from __future__ import annotations

from pathlib import Path

from overparam.cli.presets import source_runs
from overparam.cli.train import compose_checked


def test_source_runs_are_the_roots_of_from_keys():
    composed = {"from": None, "teacher": {"from": "out/soup"}, "student": {"from": "out/imp@level_2"}}
    assert source_runs(composed) == [Path("out/soup"), Path("out/imp")]
    assert source_runs({"teacher": {"from": None}}) == []


def test_ticket_soup_distill_names_the_chain_runs(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from overparam.cli.paths import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="t"):
        cfg = compose(config_name="train", overrides=["experiment=ticket_soup_distill",
                                                      f"paths.output_dir={tmp_path}"])
        job = OmegaConf.to_container(OmegaConf.create({k: v for k, v in cfg.items() if k != "hydra"}), resolve=True)
    GlobalHydra.instance().clear()
    assert job["method"]["name"] == "kd" and job["kd"]["baseline"] is True
    assert source_runs(job) == [tmp_path / "ticket_soup_distill" / "soup", tmp_path / "ticket_soup_distill" / "imp"]
    # Before the chain has run, the preset stops with one clear line naming the missing run.
    import pytest

    from overparam.errors import UserError

    with pytest.raises(UserError, match="ticket_soup_distill/soup"):
        compose_checked(["experiment=ticket_soup_distill", f"paths.output_dir={tmp_path}"])
