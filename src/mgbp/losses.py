"""Training losses of MGBP: eq. 9 (fidelity), eq. 11 (perceptual) with eqs. 12-13 (relativistic GAN),
and the contextual loss CX of Mechrez et al. on VGG19 conv3_4 features.

- Fidelity (eq. 9): L1(Y_{W=0}, X) + sum_{k in C} L1(S_k(Y_{W=0}), S_k(X)), C = {2, 4, ..., f}, S_k the
  MATLAB-exact bicubic downscale by k (`mgbp.resize.imresize`, differentiable). An optional L2 term (ours, off by
  default; `l2`): E(Y_{W=0} - X)^2, for the short "L1, then L2" fine-tune small SR networks use at the end of
  training - PSNR is a function of the mean squared error, which L1 optimises only indirectly.
- Perceptual (eq. 11):
      0.001 L_G^RSGAN(Y_{W=1})  +  sum_{k in C} c1 L1(S_k(Y_{W=1}), S_k(X))  +  0.1 CX(Y_{W=1}, X)
    + 10 L1(Y_{W=0}, X)         +  sum_{k in C} c0 L1(S_k(Y_{W=0}), S_k(X)).
  The cycle weights c1, c0 are garbled in the paper's text extraction; it reads them as 1/(10 |C|), and that
  is what we use by default (`cycle_w1 = cycle_w0 = 0.1`, each divided by |C|). Both are config values.
- Relativistic GAN (eq. 12): L_D = -E log sigmoid(C(R) - C(F)), L_G = -E log sigmoid(C(F) - C(R)), where
  C is the discriminator's logit map and R, F the multiscale real and fake sets of eq. 13, which the
  multiscale discriminator (`mgbp.models.discriminator`) takes as one input.

- Texture statistics (ours, off by default; `texture_w1`): L1 between the 7x7 local standard deviation maps of the
  luminance of Y_{W=1} and of X. Eq. 11 lets the noise paint texture wherever the discriminator cannot tell and
  the cycle terms (which see only low frequencies) allow it - over skin, sky and bokeh too. This term asks the
  W=1 output to have, in every neighbourhood, about as much texture as the ground truth: none where X is flat,
  some where X is textured; it needs no pretrained network (the CX term needs VGG19 weights).
- Relative texture statistics (ours, off by default; `texture_log_w1`): the same maps compared as L1 of
  log(std + 1/255). The plain L1 is dominated by textured regions, where the standard deviations are large;
  crackle painted over a flat region (std 0.5 -> 2 grey levels) moves it little but the log maps a lot, so this
  term asks for the right amount of texture relative to what is there, which is what a person sees on skin and
  bokeh (and what `mgbp.metrics.texture` measures).
- Flat-region excess texture (ours, off by default; `texture_flat_w1`): only where X is flat (its 7x7 local std of
  Y below 2 grey levels, the mask of `mgbp.metrics.texture`), the mean of max(0, std(Y_{W=1}) - std(X)). The two
  terms above also constrain textured regions, where the GAN is what should decide the texture; this one leaves
  those to the GAN and asks only that smooth regions get no more grain than the ground truth has there (plus
  `texture_flat_margin` grey levels, if set).

Every term has its own weight; a weight of 0 switches the term off (no computation), which is how the
ablation configs of Fig. 15 are expressed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mgbp.color import rgb_to_y
from mgbp.metrics.texture import FLAT_THRESHOLD
from mgbp.metrics.texture import WINDOW as TEXTURE_WINDOW  # the texture terms see what the metric measures
from mgbp.resize import imresize


def cycle_factors(scale: int) -> list[int]:
    """The set C = {2, 4, ..., f} of eq. 9 / 11: powers of two up to f (and f itself if it is not one)."""
    factors, k = [], 2
    while k <= scale:
        factors.append(k)
        k *= 2
    if scale > 1 and scale not in factors:
        factors.append(scale)
    return factors


def downscale(x: torch.Tensor, k: int) -> torch.Tensor:
    """S_k: MATLAB bicubic downscale by k on the last two dims (antialiased, differentiable)."""
    return imresize(x, scale=1.0 / k)


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L_L1(a, b) = E|a - b| (mean over every element)."""
    return (a - b).abs().mean()


def l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L_L2(a, b) = E(a - b)^2 (mean over every element): the MSE behind PSNR."""
    return (a - b).square().mean()


def cycle_l1(y: torch.Tensor, x: torch.Tensor, factors: list[int], x_downs: dict | None = None) -> torch.Tensor:
    """sum_{k in factors} L1(S_k(y), S_k(x)); `x_downs` may hold precomputed S_k(x) (the target is fixed)."""
    total = y.new_zeros(())
    for k in factors:
        target = x_downs[k] if x_downs is not None and k in x_downs else downscale(x, k)
        total = total + l1(downscale(y, k), target)
    return total


def fidelity_loss(y0: torch.Tensor, x: torch.Tensor, scale: int, l1_weight: float = 1.0,
                  cycle_weight: float = 1.0, l2_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 9 (with per-term weights, both 1 in the paper; the L2 term is ours and off by default).
    Returns (loss, {term: value})."""
    terms: dict[str, torch.Tensor] = {}
    if l1_weight:
        terms["l1"] = l1_weight * l1(y0, x)
    if l2_weight:
        terms["l2"] = l2_weight * l2(y0, x)
    if cycle_weight:
        terms["cycle"] = cycle_weight * cycle_l1(y0, x, cycle_factors(scale))
    return _sum_terms(terms, y0)


def local_std_map(x: torch.Tensor, window: int = TEXTURE_WINDOW, eps: float = 1e-6) -> torch.Tensor:
    """7x7 local standard deviation of the luminance (MATLAB Y, [0, 1] scale) of (N,3,H,W) images, 'valid'
    windows; `eps` under the root keeps the gradient finite on perfectly flat patches."""
    y = rgb_to_y(x.float())
    mean = F.avg_pool2d(y, window, stride=1)
    variance = (F.avg_pool2d(y * y, window, stride=1) - mean * mean).clamp_min(0.0)
    return (variance + eps).sqrt()


LOG_TEXTURE_FLOOR = 1.0 / 255.0  # one grey level: below it differences of standard deviation are invisible
FLAT_STD = FLAT_THRESHOLD / 255.0  # the flat-region threshold of `mgbp.metrics.texture` on the [0, 1] scale


# The texture terms on precomputed local-std maps: eq. 11 with several of them on computes the maps once.
def _log_std_l1(std_y: torch.Tensor, std_x: torch.Tensor, floor: float = LOG_TEXTURE_FLOOR) -> torch.Tensor:
    return l1(torch.log(std_y + floor), torch.log(std_x + floor))


def _flat_excess(std_y: torch.Tensor, std_x: torch.Tensor, threshold: float = FLAT_STD,
                 margin: float = 0.0) -> torch.Tensor:
    flat = (std_x < threshold).to(std_y.dtype)
    excess = (std_y - std_x - margin).clamp_min(0.0) * flat
    return excess.sum() / flat.sum().clamp_min(1.0)


def texture_loss(y: torch.Tensor, x: torch.Tensor, window: int = TEXTURE_WINDOW) -> torch.Tensor:
    """L1 between the local standard deviation maps of Y and X: texture where X has it, none where X is flat."""
    return l1(local_std_map(y, window), local_std_map(x, window))


def log_texture_loss(y: torch.Tensor, x: torch.Tensor, window: int = TEXTURE_WINDOW,
                     floor: float = LOG_TEXTURE_FLOOR) -> torch.Tensor:
    """L1 between log(local std + floor) of Y and X: the texture mismatch relative to the texture present."""
    return _log_std_l1(local_std_map(y, window), local_std_map(x, window), floor)


def flat_texture_loss(y: torch.Tensor, x: torch.Tensor, window: int = TEXTURE_WINDOW,
                      threshold: float = FLAT_STD, margin: float = 0.0) -> torch.Tensor:
    """Mean over the windows where X's local std of Y is below `threshold` of max(0, std(Y) - std(X) - margin):
    grain added over smooth regions beyond `margin`, nothing asked of textured ones. Zero when X has no flat
    window. A margin leaves the GAN a little fine grain, which natural-image statistics (NIQE) expect."""
    return _flat_excess(local_std_map(y, window), local_std_map(x, window), threshold, margin)


def relativistic_d_loss(c_real: torch.Tensor, c_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 12, discriminator: -E log sigmoid(C(R) - C(F)) = E softplus(C(F) - C(R)) (stable form)."""
    return F.softplus(c_fake - c_real).mean()


def relativistic_g_loss(c_real: torch.Tensor, c_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 12, generator: -E log sigmoid(C(F) - C(R)) = E softplus(C(R) - C(F))."""
    return F.softplus(c_real - c_fake).mean()


def contextual_loss(features_y: torch.Tensor, features_x: torch.Tensor, bandwidth: float = 0.5,
                    eps: float = 1e-5) -> torch.Tensor:
    """Contextual loss -log CX(Y, X) of Mechrez et al. (ECCV 2018), averaged over the batch.

    features_y: generated features (N, C, H, W); features_x: target features (N, C, H', W').
    Per image: centre both by the target's mean feature, L2-normalise, cosine distances d_ij between
    generated y_i and target x_j, relative distances d~_ij = d_ij / (min_k d_ik + eps),
    w_ij = exp((1 - d~_ij) / h), CX_ij = w_ij / sum_k w_ik, CX = mean_j max_i CX_ij.
    """
    n, c = features_x.shape[:2]
    dtype = torch.promote_types(features_x.dtype, torch.float32)  # at least float32, even under autocast
    y = features_y.reshape(n, c, -1).to(dtype)
    x = features_x.reshape(n, c, -1).to(dtype)
    mean_x = x.mean(dim=(0, 2), keepdim=True)  # centring by the target statistics, as in the reference
    y = F.normalize(y - mean_x, dim=1)
    x = F.normalize(x - mean_x, dim=1)
    cosine = torch.bmm(y.transpose(1, 2), x)  # (N, Py, Px)
    distance = (1.0 - cosine).clamp_min(0.0)
    relative = distance / (distance.min(dim=2, keepdim=True).values + eps)
    # softmax over the targets j of (1 - d~)/h is exactly w_ij / sum_k w_ik, computed stably
    cx_ij = torch.softmax((1.0 - relative) / bandwidth, dim=2)
    cx = cx_ij.max(dim=1).values.mean(dim=1)  # (N,)
    return (-torch.log(cx + eps)).mean()


@dataclass
class PerceptualWeights:
    """Weights of eq. 11; 0 switches a term off. Defaults are the paper's (cycle weights: see module doc)."""

    gan: float = 0.001
    cycle_w1: float = 0.1   # total weight over C of the cycle terms on Y_{W=1} (divided by |C|)
    cx: float = 0.1
    l1_w0: float = 10.0
    cycle_w0: float = 0.1   # total weight over C of the cycle terms on Y_{W=0} (divided by |C|)
    cx_bandwidth: float = 0.5
    texture_w1: float = 0.0  # ours: local-std matching of Y_{W=1} (see the module doc); 0 = eq. 11 as printed
    texture_log_w1: float = 0.0  # ours: the same on log(std + 1/255) (see the module doc); 0 = off
    texture_flat_w1: float = 0.0  # ours: excess local std of Y_{W=1} where X is flat (see the module doc); 0 = off
    texture_flat_margin: float = 0.0  # grey levels (0..255) of excess the flat-region term lets pass


def texture_terms(y1: torch.Tensor, x: torch.Tensor, weights: PerceptualWeights) -> dict[str, torch.Tensor]:
    """The weighted texture terms of eq. 11 that are on (ours), from one pair of local-std maps."""
    if not (weights.texture_w1 or weights.texture_log_w1 or weights.texture_flat_w1):
        return {}
    std_y, std_x = local_std_map(y1), local_std_map(x)
    terms = {}
    if weights.texture_w1:
        terms["texture_w1"] = weights.texture_w1 * l1(std_y, std_x)
    if weights.texture_log_w1:
        terms["texture_log_w1"] = weights.texture_log_w1 * _log_std_l1(std_y, std_x)
    if weights.texture_flat_w1:
        terms["texture_flat_w1"] = weights.texture_flat_w1 * _flat_excess(
            std_y, std_x, margin=weights.texture_flat_margin / 255.0)
    return terms


def perceptual_generator_loss(y1: torch.Tensor, y0: torch.Tensor | None, x: torch.Tensor, scale: int,
                              weights: PerceptualWeights, discriminator=None, vgg=None
                              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 11 for the generator. `discriminator(images_list)` gives logits of the eq. 13 set; `vgg(x)` gives
    conv3_4 features. `y0` may be None when no W=0 term is on (the no-noise ablation sets y0 = y1)."""
    factors = cycle_factors(scale)
    x_downs = {k: downscale(x, k) for k in factors}
    terms: dict[str, torch.Tensor] = {}
    if weights.gan and discriminator is not None:
        real_set = [x] + [x_downs[k] for k in factors]
        fake_set = [y1] + [downscale(y1, k) for k in factors]
        c_real, c_fake = _paired_logits(discriminator, real_set, fake_set)
        terms["gan"] = weights.gan * relativistic_g_loss(c_real, c_fake)
    if weights.cycle_w1 and factors:
        terms["cycle_w1"] = weights.cycle_w1 / len(factors) * cycle_l1(y1, x, factors, x_downs)
    if weights.cx and vgg is not None:
        terms["cx"] = weights.cx * contextual_loss(vgg(y1), vgg(x), weights.cx_bandwidth)
    terms.update(texture_terms(y1, x, weights))
    if y0 is not None and weights.l1_w0:
        terms["l1_w0"] = weights.l1_w0 * l1(y0, x)
    if y0 is not None and weights.cycle_w0 and factors:
        terms["cycle_w0"] = weights.cycle_w0 / len(factors) * cycle_l1(y0, x, factors, x_downs)
    return _sum_terms(terms, y1)


def discriminator_loss(discriminator, y1: torch.Tensor, x: torch.Tensor, scale: int) -> torch.Tensor:
    """Eq. 12 for the discriminator on the eq. 13 sets (the fake set is detached from the generator)."""
    factors = cycle_factors(scale)
    y1 = y1.detach()
    real_set = [x] + [downscale(x, k) for k in factors]
    fake_set = [y1] + [downscale(y1, k) for k in factors]
    c_real, c_fake = _paired_logits(discriminator, real_set, fake_set)
    return relativistic_d_loss(c_real, c_fake)


def _paired_logits(discriminator, real_set, fake_set):
    """C(R) and C(F) from ONE discriminator call on the batch-concatenated sets (a DistributedDataParallel
    module must see exactly one forward per backward)."""
    joint = [torch.cat([r, f.to(r.dtype)], dim=0) for r, f in zip(real_set, fake_set)]
    logits = discriminator(joint)
    n = real_set[0].shape[0]
    return logits[:n], logits[n:]


def _sum_terms(terms: dict[str, torch.Tensor], like: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    total = like.new_zeros((), dtype=torch.float32)
    for value in terms.values():
        total = total + value.float()
    # detached tensors, not floats: converting here would synchronise the GPU every step
    return total, {name: value.detach() for name, value in terms.items()}
