"""`runner reproduce experiment=<preset>` also reads the runs a preset builds on; ticket_soup_distill builds its own."""

from __future__ import annotations

from pathlib import Path

from overparam.cli.presets import source_runs


def test_source_runs_are_the_roots_of_from_keys():
    composed = {"from": None, "teacher": {"from": "out/soup"}, "student": {"from": "out/imp@level_2"}}
    assert source_runs(composed) == [Path("out/soup"), Path("out/imp")]
    assert source_runs({"teacher": {"from": None}}) == []


def test_ticket_soup_distill_is_a_chain_of_stages_under_out():
    """Each stage reads the one before it from the reproduction's own folder, never from outputs/ of a checkout."""
    from omegaconf import OmegaConf

    from overparam.cli.paths import config_dir
    from overparam.cli.presets import stage_list

    preset = OmegaConf.load(config_dir() / "experiment" / "ticket_soup_distill.yaml")
    stages = stage_list(preset.stages)
    assert [s["name"] for s in stages] == ["ticket", "copies", "soup", "distill"]
    assert [s["report"] for s in stages] == [None, None, True, True]
    reads = {s["name"]: [o for o in s["overrides"] if "{out}" in o] for s in stages}
    assert reads == {"ticket": [], "copies": ["from={out}/ticket@level_2"], "soup": ["ingredients={out}/copies"],
                     "distill": ["teacher.from={out}/soup", "student.from={out}/ticket@level_2"]}
    assert "prune.cache=false" in stages[0]["overrides"]  # the ticket's levels stay under --out
