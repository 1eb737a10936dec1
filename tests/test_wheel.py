"""Packaging: the wheel installs into a fresh virtual environment and `mgbp upscale` runs from any folder with
the model embedded in it.

The wheel is built from a copy of `pyproject.toml`, `README.md` and `src/` (so no `build/` folder, stale or
new, is read from or left in the checkout), installed with `pip --no-deps --no-index` into a new venv that sees
this environment's packages (torch, numpy, ...) through a `.pth` line, so nothing is downloaded. The installed
command then upscales the sample shipped inside the wheel from a scratch folder outside the repository, and
its output must equal, pixel for pixel, what the in-repo code writes for the same file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

import mgbp
from mgbp.cli import main
from mgbp.io import read_image

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "src" / "mgbp" / "assets" / "sample.png"


def _run(command: list, cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    """Run outside the repository with one thread (as the in-process reference runs, so the float sums of
    the two runs are made in the same order) and no PYTHONPATH that could point back at `src/`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the freshly built wheel installed; returns its bin folder."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    dist = root / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, source], cwd=root)
    wheels = list(dist.glob("mgbp-*.whl"))
    assert len(wheels) == 1, wheels

    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "mgbp/assets/sample.png" in names and "mgbp/weights/mgbp-x4.safetensors" in names
    assert not any(n.startswith(("tests/", "src/")) for n in names), "the wheel carries repository files"

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root)
    site = Path(_run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=root).stdout.strip())
    # This environment's packages, after the venv's own (a .pth line is a plain path: the editable install's
    # own .pth in that folder is not processed, so `mgbp` can only come from the wheel).
    outer = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "outer-environment.pth").write_text("\n".join(outer) + "\n")
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
          "--disable-pip-version-check", "--quiet", wheels[0]], cwd=root)
    return venv / "bin"


def test_installed_package_is_the_wheel_not_the_checkout(installed, tmp_path):
    result = _run([installed / "python", "-c", "import mgbp; print(mgbp.__file__)"], cwd=tmp_path)
    location = Path(result.stdout.strip()).resolve()
    assert installed.parent in location.parents and REPO not in location.parents


def test_console_script_reports_the_version(installed, tmp_path):
    result = _run([installed / "mgbp", "--version"], cwd=tmp_path)
    assert result.stdout.strip() == f"mgbp {mgbp.__version__}"


def test_upscale_from_any_folder_matches_the_checkout(installed, tmp_path, monkeypatch):
    where = tmp_path / "elsewhere"
    where.mkdir()
    bundled = Path(_run([installed / "python", "-c",
                         "import mgbp, pathlib; print(pathlib.Path(mgbp.__file__).parent / 'assets' / 'sample.png')"],
                        cwd=where).stdout.strip())
    assert installed.parent in bundled.parents  # the sample inside the installed wheel
    _run([installed / "mgbp", "upscale", bundled, "-o", "out.png", "-q"], cwd=where)

    # The same command through the checkout's code, in this process (one thread, as the subprocess).
    monkeypatch.chdir(tmp_path)
    assert main(["upscale", str(SAMPLE), "-o", str(tmp_path / "reference.png"), "-q"]) == 0

    out = read_image(where / "out.png").rgb_uint8()
    reference = read_image(tmp_path / "reference.png").rgb_uint8()
    sample = read_image(SAMPLE).rgb_uint8()
    assert out.shape == (4 * sample.shape[0], 4 * sample.shape[1], 3)
    np.testing.assert_array_equal(out, reference)
