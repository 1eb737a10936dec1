"""The smallest MGBPv1 (the authors' PIRM-2018 network) for the research-tool tests: x2, one level, float64."""

from __future__ import annotations

import torch

from mgbp.models import mgbpv1


def tiny_mgbpv1() -> torch.nn.Module:
    """A seeded tiny `mgbpv1.MGBPv1` in float64 and eval mode."""
    config = mgbpv1.MGBPv1Config(scale=2, features=8, growth_rate=4, bottleneck_factor=1, analysis_layers=1,
                                 upscaling_layers=1, upscaling_pre_layers=0, downscaling_layers=1,
                                 synthesis_layers=1, mu=1, recursion_depth=1)
    torch.manual_seed(0)
    return mgbpv1.MGBPv1(config).double().eval()
