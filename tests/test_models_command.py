"""`mgbp models`: every shipped model is listed with the figures its file records (issue 14: "`mgbp models`
lists them with their figures")."""

from __future__ import annotations

import json

from mgbp.cli import main
from mgbp.commands.models import figures_line
from mgbp.models.weights import SHIPPED


def test_figures_line_reads_the_recorded_measurements():
    figures = {"fidelity_w0": {"Set5/model": {"psnr_y": 32.9691}, "Set5/bicubic": {"psnr_y": 30.4047},
                               "Set14/model": {"psnr_y": 29.4431}, "Set14/bicubic": {"psnr_y": 27.6341}}}
    assert figures_line(figures) == ("PSNR-Y at W=0: Set5 32.97 dB (bicubic 30.40), "
                                     "Set14 29.44 dB (bicubic 27.63)")
    assert figures_line({}) == ""


def test_every_shipped_model_is_listed_with_figures(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in SHIPPED:
        row = next(i for i, line in enumerate(lines) if line.startswith(f"shipped {name}:"))
        assert lines[row + 1].strip().startswith("PSNR-Y at W=0:"), name


def test_json_carries_the_measurements(capsys):
    assert main(["models", "--json"]) == 0
    shipped = json.loads(capsys.readouterr().out)["shipped"]
    assert shipped["mgbp-x4"]["measured"]["fidelity_w0"]["Set14/model"]["psnr_y"] > 27.5  # README: 27.93
    assert set(shipped) == set(SHIPPED)
