"""Learned full-reference perceptual metrics, optional: LPIPS (Zhang et al., CVPR 2018, AlexNet v0.1) and
DISTS (Ding et al., TPAMI 2020) through pyiqa, beside the paper's PSNR/SSIM (Table II) and NIQE (eq. 14).

pyiqa is not a dependency of mgbp (it is not installed by any extra): these metrics run only when pyiqa is
installed AND its weight files are already on disk, where pyiqa and torchvision keep them (pyiqa's own file in
`<torch hub dir>/pyiqa/`, the ImageNet backbone in `<torch hub dir>/checkpoints/`). The metric is built from
those local files (`pretrained_model_path`), so nothing is downloaded at run time; otherwise it is skipped and
`unavailable` says why. Scores are on RGB in [0, 1] with the protocol's `scale`-pixel border shaved; lower is
better for both.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from mgbp.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class LearnedMetric:
    name: str  # our name (the JSON key and table column)
    pyiqa_name: str  # pyiqa.create_metric's name
    weights: str  # pyiqa's weight file, in <torch hub dir>/pyiqa/
    backbone: str  # torchvision's ImageNet weights it is built on, in <torch hub dir>/checkpoints/


LEARNED_METRICS = {
    "lpips": LearnedMetric("lpips", "lpips", "LPIPS_v0.1_alex-df73285e.pth", "alexnet-owt-7be5be79.pth"),
    "dists": LearnedMetric("dists", "dists", "DISTS_weights-f5e65c96.pth", "vgg16-397923af.pth"),
}


def _metric(name: str) -> LearnedMetric:
    if name not in LEARNED_METRICS:
        raise ConfigError(f"unknown learned metric {name!r} (choose from {', '.join(LEARNED_METRICS)})")
    return LEARNED_METRICS[name]


def weight_files(name: str) -> list[Path]:
    """The local files the metric needs: pyiqa's weights, then the torchvision backbone."""
    metric = _metric(name)
    hub = Path(torch.hub.get_dir())
    return [hub / "pyiqa" / metric.weights, hub / "checkpoints" / metric.backbone]


def unavailable(name: str) -> str | None:
    """None when the metric can run here without a download, else the one-line reason it cannot."""
    try:
        import pyiqa  # noqa: F401  (only asking whether it is there)
    except ImportError:
        return f"{name.upper()} skipped: pyiqa is not installed (optional: pip install pyiqa, then put its weights " \
               "on disk; mgbp never downloads them)"
    missing = [str(path) for path in weight_files(name) if not path.is_file()]
    if missing:
        return f"{name.upper()} skipped: weight files not on disk ({', '.join(missing)}); mgbp never downloads them"
    return None


class LearnedScorer:
    """One pyiqa metric built from local weight files: `scorer(output, reference, scale) -> float`."""

    def __init__(self, name: str, device: str | torch.device = "cpu"):
        reason = unavailable(name)
        if reason is not None:
            raise ConfigError(reason)
        import pyiqa

        self.name = name
        self.device = torch.device(device)
        weights = weight_files(name)[0]
        self.metric = pyiqa.create_metric(_metric(name).pyiqa_name, as_loss=False, device=self.device,
                                          pretrained_model_path=str(weights))

    def __call__(self, output: torch.Tensor, reference: torch.Tensor, scale: int) -> float:
        """(1,3,H,W) RGB in [0, 1] each; `scale` border pixels shaved, as for every other score."""
        crop = (..., slice(scale, -scale), slice(scale, -scale)) if scale > 0 else (...,)
        with torch.no_grad():
            value = self.metric(output[crop].float().to(self.device), reference[crop].float().to(self.device))
        return float(torch.as_tensor(value).reshape(-1)[0])
