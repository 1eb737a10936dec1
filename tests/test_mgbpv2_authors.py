"""Fidelity of our MGBPv2 port to the authors' code (issue 13, item 3): their weights in our network, same output.

Independent reference: the authors' own `model.py` (public `pnavarre/mgbpv2`, unmodified, in
`../shared/reference/authors-code/mgbpv2`), run here on the same input. Their random initialisation (seeded) is
mapped into our network by `mgbp.models.authors_mgbpv2.from_authors_state_dict`; at W = 0 with our residual off the two
outputs agree to float rounding. Small configurations of theirs keep this fast; the mapping is the same for the
Table I x4 one (CH3_LE4_MU4_BIAS_NOISE1_FE192-128-64-32_Filter#K3_mgbp).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mgbp.errors import WeightFileError
from mgbp.models.authors_mgbpv2 import from_authors_state_dict
from mgbp.models.mgbpv2 import MGBPv2Config, count_parameters

AUTHORS = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "authors-code" / "mgbpv2"


@pytest.fixture(scope="module")
def authors_model_module():
    if not (AUTHORS / "model.py").is_file():
        pytest.skip(f"../shared is absent: no authors' MGBPv2 code under {AUTHORS}")
    if not hasattr(np, "int"):
        np.int = int  # their code uses np.int, removed from numpy >= 1.24 (authors-code/README.md)
    sys.path.insert(0, str(AUTHORS))
    try:
        return importlib.import_module("model")
    finally:
        sys.path.remove(str(AUTHORS))


def authors_pair(module, levels: int, mu: int, channels: tuple[int, ...], seed: int = 0):
    model_id = f"CH3_LE{levels}_MU{mu}_BIAS_NOISE1_FE{'-'.join(map(str, channels))}_Filter#K3_mgbp"
    torch.manual_seed(seed)
    theirs = module.MGBPv2(model_id).double().eval()
    config = MGBPv2Config(scale=4, levels=levels, mu=mu, channels=channels, residual=False)
    ours = from_authors_state_dict(theirs.state_dict(), config).double().eval()
    return theirs, ours


@pytest.mark.parametrize(("levels", "mu", "channels", "size"), [
    (3, 2, (12, 8, 6), (37, 41)),  # 3 levels: the tags' stale step counters matter below the top level
    (4, 3, (10, 8, 6, 4), (50, 47)),
    (2, 5, (8, 6), (23, 30)),
])
def test_authors_weights_give_the_authors_output_at_w0(authors_model_module, levels, mu, channels, size):
    theirs, ours = authors_pair(authors_model_module, levels, mu, channels)
    generator = torch.Generator().manual_seed(1)
    upscaled = torch.rand(2, 3, *size, generator=generator, dtype=torch.float64)  # their input: any upscaled image
    theirs.init_border(size)
    with torch.no_grad():
        want = theirs(upscaled, noise=torch.zeros_like(upscaled))
        got = ours(None, noise_amp=0.0, upscaled=upscaled)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-10  # float64; float32 rounding stays far below 1e-5
    with torch.no_grad():
        got32 = ours.float()(None, upscaled=upscaled.float())
    assert (got32.double() - want).abs().max().item() < 1e-5


def test_parameter_counts_differ_only_at_the_noise_input_and_the_duplicate_synthesis(authors_model_module):
    """Their state dict counts 2 sum_k K_k^2 more (3-channel noise analysis), 3 + 1 (the unused top-level
    AnalysisN) and 3 C_L + 3 (Synthesis registered under two names); Table I x4: 46,487,198 - 46,486,529."""
    levels, channels = 4, (10, 8, 6, 4)
    theirs, ours = authors_pair(authors_model_module, levels, 2, channels)
    theirs_count = sum(t.numel() for t in theirs.state_dict().values())
    kernels = [(3 - 1) * (2 ** (levels - 1 - k) - 1) + 1 for k in range(levels - 1)]
    expected = 2 * sum(k * k for k in kernels) + 4 + 3 * channels[-1] + 3
    assert theirs_count - count_parameters(ours) == expected
    assert 2 * (15**2 + 7**2 + 3**2) + 4 + 3 * 32 + 3 == 46_487_198 - 46_486_529  # the Table I x4 figures


def test_mismatched_configuration_is_a_weight_file_error(authors_model_module):
    theirs, _ = authors_pair(authors_model_module, 3, 2, (12, 8, 6))
    with pytest.raises(WeightFileError):
        from_authors_state_dict(theirs.state_dict(), MGBPv2Config(levels=3, mu=3, channels=(12, 8, 6)))
    with pytest.raises(WeightFileError):
        from_authors_state_dict(theirs.state_dict(), MGBPv2Config(levels=3, mu=2, channels=(12, 8, 4)))
