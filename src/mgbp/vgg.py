"""VGG19 trunk up to conv3_4: the feature space of the contextual loss CX in eq. 11 (Section IV-C).

The paper computes CX "using features from conv3-4 of a VGG-19 network". We write the trunk ourselves
(no torchvision dependency, no download) with the layer indices of torchvision's `vgg19().features`, so
a torchvision-format ImageNet state dict (`features.0.weight` ... `features.16.bias`, the usual
`vgg19-dcbb9e9d.pth`) loads directly; a path to it comes from the training config. Inputs are RGB in
[0, 1]; the ImageNet mean/std normalisation torchvision's weights expect is applied inside.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from mgbp.errors import WeightFileError

log = logging.getLogger(__name__)

# torchvision vgg19 `features` up to conv3_4: channel widths of the convolutions, "M" = 2x2 max pool.
_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Conv34(nn.Module):
    """VGG19 features up to conv3_4 (index 16 of torchvision's `features`), ReLU applied by default."""

    def __init__(self, relu_last: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for item in _LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_channels, item, 3, padding=1), nn.ReLU(inplace=True)]
                in_channels = item
        if not relu_last:
            layers.pop()
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


def load_vgg19_conv34(path: str | Path, device=None) -> VGG19Conv34:
    """The trunk with ImageNet weights from a torchvision-format file (.pth/.pt or .safetensors), frozen."""
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"VGG19 weight file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # any decoding failure is a bad file from the user's point of view
        raise WeightFileError(f"cannot read VGG19 weights {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    model = VGG19Conv34()
    wanted = model.state_dict()
    picked = {}
    for key in wanted:
        if key not in state:
            raise WeightFileError(f"{path} is not a torchvision VGG19 state dict: key {key!r} missing")
        if tuple(state[key].shape) != tuple(wanted[key].shape):
            raise WeightFileError(f"{path}: {key} has shape {tuple(state[key].shape)}, "
                                  f"expected {tuple(wanted[key].shape)}")
        picked[key] = state[key].float()
    model.load_state_dict(picked)
    model.requires_grad_(False).eval()
    return model.to(device) if device is not None else model


def maybe_load_vgg(path: str | Path | None, device=None) -> VGG19Conv34 | None:
    """The frozen trunk, or None with a logged warning when no weight file is configured (CX term off)."""
    if not path:
        log.warning("no VGG19 weight file configured (loss.vgg_weights): the contextual term CX is OFF")
        return None
    return load_vgg19_conv34(path, device)
