"""`runner ls`: every option's description is a whole sentence, and the launchers the README names are listed."""

from __future__ import annotations

import pytest

from overparam.cli.main import main as runner


def test_every_listed_description_ends_a_sentence(capsys):
    assert runner(["ls"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ") or line.startswith(" *")]
    assert len(lines) > 80
    cut = [line.split()[0].lstrip("*") for line in lines if not line.rstrip().endswith((".", ")"))]
    assert cut == []


def test_a_description_wrapping_over_comment_lines_is_read_to_its_full_stop(tmp_path):
    from overparam.cli.ls import describe

    config = tmp_path / "x.yaml"
    config.write_text("# @package _global_\n# First part of a sentence,\n# its end. Then more\n# and more.\nkey: 1\n")
    assert describe(config) == "First part of a sentence, its end."
    config.write_text("# One line.\n# Another.\n")
    assert describe(config) == "One line."


@pytest.mark.parametrize("group", ["hydra/launcher", "launchers"])
def test_hydra_launchers_are_a_listed_group(capsys, group):
    assert runner(["ls", group]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "hydra/launcher:"
    assert [line.split()[0] for line in out[1:]] == ["*basic", "joblib", "submitit_local", "submitit_slurm"]
    assert "one after another" in out[1]
