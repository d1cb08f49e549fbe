"""Every command of the CLI is there with its options (the move out of service/ kept them all)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gaitid.cli import app

COMMANDS = {
    ("train",): ["--out", "--resume", "--set", "--device"],
    ("eval",): ["--protocol", "--depth-root", "--subjects", "--metric", "--out", "--device"],
    ("export",): ["--fp16", "--training-data"],
    ("prepare",): ["--pattern", "--workers", "--segmenter", "--background", "--depth"],
    ("serve",): ["--host", "--port", "--workers"],
    ("rescore",): ["--out", "--format", "--state", "--namespace", "--top-k", "--threshold", "--gallery-dir", "--model",
                   "--segmenter", "--background", "--path-pattern", "--max-frames", "--max-duration", "--workers",
                   "--ray", "--local", "--ray-address", "--ray-actors", "--ray-cpus", "--ray-gpus", "--force",
                   "--progress", "--camera", "--cameras-file"],
    ("rescore-report",): ["--out", "--state", "--format", "--unknown-limit"],
    ("sightings",): ["--state", "--camera", "--since", "--until", "--threshold", "--limit", "--namespace",
                     "--gallery-dir", "--json", "--thumbnails"],
    ("calibrate",): ["--subjects", "--enrolled-fraction", "--target-far", "--rows", "--json", "--save-embeddings",
                     "--det", "--write-threshold"],
    ("reembed",): ["--namespace", "--gallery-dir"],
    ("models", "fetch"): ["--dest"],
    ("models", "import"): ["--dest"],
    ("models", "list"): ["--dest"],
    ("models", "upgrade"): [],
    ("models", "convert-opengait"): ["--arch", "--config"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_and_its_options(command):
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option in COMMANDS[command]:
        assert option in result.output, (command, option)
