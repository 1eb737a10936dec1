"""Back-projection consistency S_f(Y) = x: measure it, and enforce it with classic IBP (paper eqs. 3-5).

A primitive beside `mgbp.resize` (it imports only primitives): `mgbp upscale --consistent` (through
`mgbp.inference`), video inference and the `mgbp consistency` command (`mgbp.commands.consistency`) use it.

The prior behind MGBP (Section II, eq. 1 and Section III-A, eq. 3) is that a good output Y, downscaled by the
degradation operator S_f (MATLAB bicubic `imresize(Y, 1/f)`, the operator that made the LR input), gives back
the input: S_f(Y) = x. This module

- measures the LR mismatch e = x - S_f(Y) of any output against its input (max |e| and RMSE, per image and
  per dataset), and
- enforces the prior with the classic Iterative Back-Projection of eqs. 4-5,
      e_k = x - S_f(y_k),    y_{k+1} = y_k + step * P(e_k),    P = bicubic upscale imresize(e, f),
  until max |e_k| < tol (default half a grey level, 0.5/255) or `max_iter` iterations.

Convergence (measured with the dense per-axis matrices of `mgbp.resize`, f = 2, 3, 4, 8, 16 and LR lengths
1..69 and 500): the LR error evolves as e_{k+1} = (I - step * S_f P) e_k, and S_f P is separable with per-axis
factors M = S_f P whose eigenvalues are real and lie in [0.472, 1.0]; the 2-D operator therefore has its
spectrum in [0.223, 1.0]. With the classic step 1 the error shrinks by at most 1 - 0.223 = 0.777 per
iteration (about 25 iterations from a max error of 1.0 in the worst case); the best fixed step
2 / (0.223 + 1) = 1.63 gives 0.635. We use step 1.6 by default (contraction <= max(|1 - 1.6*0.223|,
|1 - 1.6|) = 0.643, about 2.3 iterations per factor e: ~14 iterations from a max error of 1.0 to 0.5/255).
Measured from Y = 0 against a checkerboard LR (the slowest mode plus DC, max error 1.0), f = 2, 3, 4, 8:
13 iterations at step 1.6 (observed rate 0.59-0.61), 20-22 at step 1 (0.75-0.76); uniform random inputs
take 11 at step 1.6. Every update lies in the range of P, so the iteration converges to
y_0 + P (S_f P)^{-1} e_0, the back-projection of the initial mismatch; the tests check that limit against a
float64 dense-matrix solve.

By default the enforced output is not clamped: clamping to [0, 1] (or rounding to uint8) afterwards moves it
off the constraint again (`measure_consistency` reports what survives rounding). `clamp=True` (the command's
default, since it writes images) clips to [0, 1] inside the loop instead, which keeps the saved image
consistent to about half a grey level.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from mgbp.errors import ConfigError
from mgbp.io import round_levels
from mgbp.resize import imresize

DEFAULT_TOL = 0.5 / 255
DEFAULT_MAX_ITER = 60
DEFAULT_STEP = 1.6  # see the module docstring: spectrum of S_f P in [0.223, 1]


@dataclass
class ConsistencyInfo:
    """What `enforce_consistency` did: the LR max error (in [0,1] units) before and after, per iteration."""

    iterations: int
    converged: bool
    max_error_before: float
    max_error_after: float
    history: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _check_pair(lr: torch.Tensor, output: torch.Tensor, scale: int) -> None:
    if not (torch.is_tensor(lr) and torch.is_tensor(output)):
        raise ConfigError("consistency expects tensors for the input and the output")
    if int(scale) != scale or scale < 1:
        raise ConfigError(f"consistency needs an integer scale >= 1, got {scale}")
    expected = (lr.shape[-2] * int(scale), lr.shape[-1] * int(scale))
    if tuple(output.shape[:-2]) != tuple(lr.shape[:-2]) or tuple(output.shape[-2:]) != expected:
        raise ConfigError(f"output shape {tuple(output.shape)} does not match input {tuple(lr.shape)} "
                          f"upscaled x{int(scale)}")


def downscale(output: torch.Tensor, scale: int) -> torch.Tensor:
    """S_f: MATLAB bicubic downscale by 1/f (antialiased), the degradation that made the input (traceable: see
    `imresize`)."""
    return imresize(output, scale=1.0 / scale)


def projection_step(lr: torch.Tensor, output: torch.Tensor, scale: int) -> torch.Tensor:
    """One iteration of eqs. 4-5 at the default step: y + step * P(x - S_f(y)), unclamped."""
    return output + DEFAULT_STEP * imresize(lr - downscale(output, scale), scale=float(scale))


def lr_error(lr: torch.Tensor, output: torch.Tensor, scale: int) -> torch.Tensor:
    """e = x - S_f(Y) (eq. 4), same shape as `lr`."""
    _check_pair(lr, output, scale)
    return lr - downscale(output, scale)


def measure_consistency(lr: torch.Tensor, output: torch.Tensor, scale: int) -> dict[str, torch.Tensor]:
    """Per-image mismatch of S_f(Y) against x for (N,C,h,w) / (N,C,fh,fw) tensors in [0,1].

    Returns float64 tensors (N,): `max_abs` and `rmse` of x - S_f(Y) on the [0,255] scale, for Y as given,
    and `max_abs_uint8`, `rmse_uint8` for Y rounded to uint8 first (what a saved image keeps).
    """
    lr64, out64 = lr.to(torch.float64), output.to(torch.float64)
    rounded = round_levels(out64 * 255) / 255  # clipped and rounded as a saved image is
    result = {}
    for suffix, candidate in (("", out64), ("_uint8", rounded)):
        error = lr_error(lr64, candidate, scale).flatten(1) * 255
        result["max_abs" + suffix] = error.abs().amax(dim=1)
        result["rmse" + suffix] = error.pow(2).mean(dim=1).sqrt()
    return result


def enforce_consistency(lr: torch.Tensor, output: torch.Tensor, scale: int, tol: float = DEFAULT_TOL,
                        max_iter: int = DEFAULT_MAX_ITER, step: float = DEFAULT_STEP, clamp: bool = False):
    """Classic iterative back-projection (eqs. 4-5) of `output` onto {Y : S_f(Y) = lr}.

    Iterates e = lr - S_f(y), y <- y + step * imresize(e, f) until max |e| < tol over the whole batch or
    `max_iter` iterations. Works in float64 (the tolerance is far below float32 rounding of large sums),
    returns the output in the input's dtype and a `ConsistencyInfo`.

    `clamp=True` clips y to [0, 1] after every update (alternating projections onto the constraint and the
    valid range): the result then survives saving as uint8 (on Set5 x4 bicubic outputs: max |e| 0.43-0.50 grey
    levels after clipping and rounding, against 2.6-11.7 for the unclamped result clipped afterwards), at
    the price of the convergence guarantee (7-37 iterations measured there instead of 4-6).
    """
    _check_pair(lr, output, scale)
    if not 0 < step < 2:
        raise ConfigError(f"back-projection step must be in (0, 2) for convergence, got {step}")
    if tol <= 0 or max_iter < 0:
        raise ConfigError("tol must be positive and max_iter non-negative")
    x = lr.to(torch.float64)
    y = output.to(torch.float64)
    error = x - downscale(y, scale)
    history = [float(error.abs().max())]
    iterations = 0
    while history[-1] >= tol and iterations < max_iter:
        y = y + step * imresize(error, scale=float(scale))
        if clamp:
            y = y.clamp(0.0, 1.0)
        error = x - downscale(y, scale)
        history.append(float(error.abs().max()))
        iterations += 1
    info = ConsistencyInfo(iterations=iterations, converged=history[-1] < tol,
                           max_error_before=history[0], max_error_after=history[-1], history=history)
    return y.to(output.dtype), info


def check_steps(consistent: bool, steps, option: str = "--consistent-steps") -> None:
    """ConfigError, before any work, for back-projection steps that are not a whole number >= 1, or that are
    given without the back-projection they bound."""
    if steps is None:
        return
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"{option} must be a whole number >= 1, got {steps!r}")
    if not consistent:
        raise ConfigError(f"{option} bounds the back-projection of --consistent: give --consistent too")


def back_project(lr: torch.Tensor, output: torch.Tensor, scale: int, steps: int | None = None) -> torch.Tensor:
    """`output` projected onto {Y in [0,1] : S_f(Y) = lr} (`enforce_consistency` with `clamp=True`, so that it
    survives saving): what `mgbp upscale --consistent` writes. `steps`: exactly that many iterations of eqs. 4-5
    instead (each one bicubic downscale and upscale), clipped to [0, 1] after each, in float32 unless an input is
    float64 (a bounded number of steps has no convergence test to protect, and float32 runs the two resizes
    about twice as fast; the converged projection keeps float64, see `enforce_consistency`)."""
    if steps is None:
        projected, _info = enforce_consistency(lr, output, scale, clamp=True)
        return projected
    check_steps(True, steps, "back-projection steps")
    _check_pair(lr, output, scale)
    dtype = torch.float64 if torch.float64 in (lr.dtype, output.dtype) else torch.float32
    x, y = lr.to(dtype), output.to(dtype)
    for _ in range(steps):
        y = projection_step(x, y, scale).clamp_(0.0, 1.0)
    return y.to(output.dtype)
