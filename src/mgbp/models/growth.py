"""Warm starts: a larger MGBPv2 that computes exactly what a trained one does, so that training it only has to learn
what the added parts add.

- `deepen`: more back-projection steps per level (Algorithm 1, lines 3-7). Each pass s of BP^mu_k adds its own
  Upscale to the running output (line 7: out += Upscale_tag([y_{k-1}, c])), so a call site whose Upscale weights
  and bias are zero leaves `out` as it was. A network built with a larger mu keeps every tag of the smaller one
  (bp.L3.s1.L2.s2... name the same call sites) and adds new ones (s3, ...; inside old steps too). `deepen` copies
  the trained weights into their tags and gives every new call site a zero Upscale, so the grown network starts
  at the trained one's output (issue 14: "model size is free within reason", without starting over). The new
  Downscales keep their random initialisation; the gradient reaches a new branch once the Upscale in front of it
  has moved off zero (one step per nesting level), as in a residual network whose branches start at zero.
- `inflate_to_3d`: MGBP-3D (Section III-A) from an image MGBPv2, frame by frame the same output.
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


def inflate_to_3d(model: MGBPv2, temporal_kernel: int = 3, frames: int | None = None) -> MGBPv2:
    """An MGBP-3D network that outputs, frame by frame, exactly what the image `model` outputs.

    Each 2D kernel becomes the centre temporal slice of a (Kt, K, K) kernel whose other slices are zero
    (the "inflation" of image networks into video networks), with 'same' temporal padding. Training a video
    model from this start only has to learn what neighbouring frames add; from a random start it would first
    have to relearn single-image super-resolution (Section III-A trains MGBP-3D from scratch on far more
    GPU time than a CPU session has).
    The image-only extensions of the config (`noise_mask`, `output_projection`) are not carried over: the video
    network gives what the image network gives without them (at W = 0 that is the image model's own output
    unless its projection also runs at W = 0).
    """
    if not isinstance(model, MGBPv2) or model.is_video:
        raise ConfigError(f"inflating to 3D needs an MGBPv2 image model, got {model.family}")
    config = dataclasses.replace(model.config, dims=3, temporal_kernel=temporal_kernel,
                                 temporal_padding="same", frames=frames, noise_mask=None, output_projection=None)
    video = MGBPv2(config)
    image_state = model.state_dict()
    state = {}
    for name, target in video.state_dict().items():
        source = image_state[name]
        if target.dim() == source.dim():  # biases
            state[name] = source.clone()
        else:  # (out, in, K, K) -> (out, in, Kt, K, K), the image kernel at the centre tap
            weight = source.new_zeros(target.shape)
            weight.select(2, target.shape[2] // 2).copy_(source)
            state[name] = weight
    video.load_state_dict(state)
    return video.to(next(model.parameters()).device)
