"""Image quality metrics of the paper: PSNR, SSIM (Tables II-IV), RMSE (Fig. 11, 12, 14, Table V), NIQE (eq. 14).

`fidelity` holds the full-reference metrics (MATLAB conventions, Y channel, border crop), `niqe_release` the
no-reference NIQE of LIVE's niqe_release. All take batched tensors (N, C, H, W) in [0, 1] and return per-image
float64 tensors (N,).
"""

from mgbp.metrics.fidelity import compare_uint8, mse, psnr, rmse, ssim, uint8_to_tensor
from mgbp.metrics.niqe_release import niqe

__all__ = ["compare_uint8", "mse", "niqe", "psnr", "rmse", "ssim", "uint8_to_tensor"]
