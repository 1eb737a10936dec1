"""The authors' published MGBPv2 weights (public `pnavarre/mgbpv2`, `model.py`) in our network of Algorithm 1.

Paper: Algorithm 1 and Table I (Section III-A). Each call site of their recursion has its own tagged
Downscale/Upscale, as ours has, so the mapping is one to one up to the three noise-input differences listed in
`from_authors_state_dict`. It lets our Table I presets be checked against the authors' code with the same weights
(`tests/test_mgbpv2_authors.py`). Facts read from their code; our own implementation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mgbp.errors import ConfigError, WeightFileError
from mgbp.models.mgbpv2 import BackProjectionStep, MGBPv2, MGBPv2Config


def from_authors_state_dict(state_dict: Mapping[str, torch.Tensor], config: MGBPv2Config) -> MGBPv2:
    """An MGBPv2 of `config` carrying the weights of an authors' MGBPv2 (public `pnavarre/mgbpv2`, `model.py`).

    Their modules map one to one: Analysis_k -> analysis[k], Synthesis -> synthesis, and each call site's
    `Downscale_<tag>` / `Upscale_<tag>` (their tags, e.g. `Downscale_3-0-0-1`, name the step counters of the
    recursion) -> the BackProjectionStep at the same position of the call order (their state dict lists the
    Downscales in call order, as our `tags()` does). Three differences, all at the noise input:
    - their noise input has the image's 3 channels, ours 1: AnalysisN_k's kernels are summed over the 3 input
      channels (the same features when the 3 noise channels are equal);
    - they scale the noise features, bias included, by W (W * AnalysisN_k(n)); we scale the noise and add the
      bias (AnalysisN_k(W n)): the bias is set to 0 here, which is exact at W = 0 only (for W > 0 theirs adds
      W b where ours adds nothing);
    - their unused AnalysisN of the top level (3 + 1 parameters) and their second name for the Synthesis module
      (`synthesis` and `Synthesis` are one module: a state dict counts its 3 C_L + 3 parameters twice) are
      dropped. That is the whole difference between their 46,487,198 tensors' elements and our 46,486,529
      parameters for Table I x4: 2 (15^2 + 7^2 + 3^2) + 4 + 99 = 669.
    Their network has no residual: use `residual=False` in `config` for their output. The outputs then agree at
    W = 0 on the same (bicubic-upscaled) input (tests/test_mgbpv2_authors.py).
    """
    if config.dims != 2 or config.noise_features != 1 or config.noise_channels != 1:
        raise ConfigError("the authors' MGBPv2 is 2D with one noise feature per level and one noise channel")
    model = MGBPv2(config)
    target = model.state_dict()
    state = {}

    def take(ours: str, theirs: str, convert=lambda t: t) -> None:
        if theirs not in state_dict:
            raise WeightFileError(f"the authors' MGBPv2 state dict has no {theirs} (for {ours})")
        tensor = convert(state_dict[theirs])
        if tuple(tensor.shape) != tuple(target[ours].shape):
            raise WeightFileError(f"{theirs} has shape {tuple(tensor.shape)}, {ours} needs {tuple(target[ours].shape)}")
        state[ours] = tensor

    for k in range(config.levels):
        take(f"analysis.{k}.weight", f"Analysis_{k}.weight")
        if config.bias:
            take(f"analysis.{k}.bias", f"Analysis_{k}.bias")
    for k in range(config.levels - 1):
        take(f"noise_analysis.{k}.weight", f"AnalysisN_{k}.weight", lambda t: t.sum(dim=1, keepdim=True))
        state[f"noise_analysis.{k}.bias"] = torch.zeros_like(target[f"noise_analysis.{k}.bias"])
    take("synthesis.weight", "Synthesis.weight")
    if config.bias:
        take("synthesis.bias", "Synthesis.bias")
    theirs_tags = [key[len("Downscale_"):-len(".weight")] for key in state_dict
                   if key.startswith("Downscale_") and key.endswith(".weight")]
    names = {module: name for name, module in model.named_modules()}
    steps = [m for m in model.modules() if isinstance(m, BackProjectionStep)]
    if len(theirs_tags) != len(steps):
        raise WeightFileError(f"the authors' state dict has {len(theirs_tags)} Downscale/Upscale pairs, this "
                              f"configuration {len(steps)}")
    for step, tag in zip(steps, theirs_tags):
        for part in ("weight", "bias") if config.bias else ("weight",):
            take(f"{names[step]}.down.{part}", f"Downscale_{tag}.{part}")
            take(f"{names[step]}.up.{part}", f"Upscale_{tag}.1.{part}")  # Sequential(ReLU, ConvTranspose2d)
    model.load_state_dict(state, strict=True)
    return model
