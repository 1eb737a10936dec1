"""Function-preserving growth of a trained MGBPv2: more back-projection steps per level (Algorithm 1, lines 3-7).

Each pass s of BP^mu_k adds its own Upscale to the running output (line 7: out += Upscale_tag([y_{k-1}, c])), so a
call site whose Upscale weights and bias are zero leaves `out` as it was. A network built with a larger mu keeps
every tag of the smaller one (bp.L3.s1.L2.s2... name the same call sites), and adds new ones (s3, ...; inside old
steps too). `deepen` copies the trained weights into their tags and gives every new call site a zero Upscale:
the grown network computes exactly what the trained one did, and training then only has to learn what the
extra steps add - the warm start that lets a larger model continue from shipped weights instead of from scratch
(issue 14: "model size is free within reason"). The new Downscales keep their random initialisation, so the
gradient reaches them once their Upscale has moved off zero (after the first step), as in a residual network
whose branches start at zero.
"""

from __future__ import annotations

import dataclasses

import torch

from mgbp.errors import ConfigError
from mgbp.models.mgbpv2 import MGBPv2


def _is_upscale(name: str) -> bool:
    return ".up." in f".{name}"


def deepen(model: MGBPv2, mu: int) -> MGBPv2:
    """`model` rebuilt with `mu` steps per level (>= its own), computing the same function (see the module)."""
    if not isinstance(model, MGBPv2):
        raise ConfigError(f"deepening needs an MGBPv2 model, got {model.family}")
    if mu < model.config.mu:
        raise ConfigError(f"mu {mu} is below the model's mu {model.config.mu}: deepening only adds steps")
    grown = MGBPv2(dataclasses.replace(model.config, mu=mu))
    grown.preset = model.preset
    trained = model.state_dict()
    state = grown.state_dict()
    unmatched = sorted(set(trained) - set(state))
    if unmatched:  # cannot happen for tags built by BackProjection; a guard against a renamed module
        raise ConfigError(f"the deeper network has no place for {unmatched[0]}")
    for name, tensor in state.items():
        if name in trained:
            state[name] = trained[name].to(tensor.dtype)
        elif _is_upscale(name):
            state[name] = torch.zeros_like(tensor)
    grown.load_state_dict(state)
    device = next(model.parameters()).device
    return grown.to(device)
