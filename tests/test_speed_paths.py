"""The inference-only fast paths (issue 13) compute what the autograd paths compute.

Without autograd, MGBPv2 writes each Upscale's input into one buffer per level (mgbpv2.UpscaleInputs) and MGBPv1
grows its DenseNet stages in one buffer and fuses 1x1 convolutions with bias and ReLU (mgbp.models.onednn;
MGBPv2's 1x1 Analysis_L and Synthesis run through it too); with autograd both concatenate and use plain PyTorch
operators. The autograd path is the reference here; it is itself checked against independent references
elsewhere (a literal float64 Algorithm 1 in test_models.py, the authors' outputs in test_mgbpv1.py and
test_mgbpv2_authors.py)."""

from __future__ import annotations

import pytest
import torch

from mgbp.models import build_model
from mgbp.models.mgbpv1 import MGBPv1, MGBPv1Config


def both_paths(model, *args, **kwargs):
    with torch.no_grad():
        fast = model(*args, **kwargs)
    with torch.enable_grad():
        reference = model(*args, **kwargs).detach()
    return fast, reference


@pytest.mark.parametrize("overrides", [{}, {"padding": "same", "noise_features": 0}, {"dims": 3}])
def test_mgbpv2_inference_buffers_equal_the_concatenations(overrides):
    torch.manual_seed(0)
    model = build_model("tiny", **overrides).eval()
    shape = (2, 3, 3, 9, 11) if model.is_video else (2, 3, 13, 17)
    lr = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(model.noise_shape(lr.shape), generator=torch.Generator().manual_seed(2))
    fast, reference = both_paths(model, lr, noise_amp=0.6, noise=noise)
    torch.testing.assert_close(fast, reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 0.05)])
def test_mgbpv1_fused_inference_equals_the_autograd_path(dtype, tolerance):
    torch.manual_seed(0)
    config = MGBPv1Config(features=8, growth_rate=4, bottleneck_factor=2, analysis_layers=3, upscaling_layers=3,
                          upscaling_pre_layers=2, downscaling_layers=3, synthesis_layers=3)
    model = MGBPv1(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.bias"):
                p.uniform_(-0.2, 0.2)  # non-zero activation biases: the folded bias terms matter
    model = model.to(dtype)
    lr = torch.rand(1, 3, 10, 12, generator=torch.Generator().manual_seed(3)).to(dtype)
    noise = [n.to(dtype) for n in model.draw_noise(lr.shape, generator=torch.Generator().manual_seed(4))]
    fast, reference = both_paths(model, lr, noise_amp=0.5, noise=noise)
    assert (fast.float() - reference.float()).abs().max().item() < tolerance
