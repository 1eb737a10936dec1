"""Losses of eqs. 9, 11, 12 and the contextual loss, each against an independent float64 computation."""

import math

import numpy as np
import pytest
import torch

from mgbp import losses
from mgbp.models.discriminator import MultiscaleDiscriminator
from mgbp.vgg import VGG19Conv34


# ---------------------------------------------------------------- independent references (float64, numpy)
def keys_cubic(x):
    ax = np.abs(x)
    return np.where(ax <= 1, 1.5 * ax**3 - 2.5 * ax**2 + 1,
                    np.where(ax <= 2, -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2, 0.0))


def downscale_matrix(n, k):
    """(n/k, n) matrix of MATLAB's antialiased bicubic shrink by an integer k, mirrored borders."""
    m = n // k
    mat = np.zeros((m, n))
    for i in range(m):
        centre = (i + 0.5) * k - 0.5  # 0-based input coordinate of output pixel i
        for j in range(int(np.floor(centre - 2 * k)) - 1, int(np.ceil(centre + 2 * k)) + 2):
            w = keys_cubic((j - centre) / k) / k
            src = j if 0 <= j < n else (-j - 1 if j < 0 else 2 * n - 1 - j)
            mat[i, src] += w
        mat[i] /= mat[i].sum()
    return mat


def ref_downscale(img, k):
    """img (N, C, H, W) float64 numpy."""
    rows, cols = downscale_matrix(img.shape[-2], k), downscale_matrix(img.shape[-1], k)
    return np.einsum("ih,nchw,jw->ncij", rows, img, cols)


def ref_contextual(fy, fx, mu=None, h=0.5, eps=1e-5):
    """Direct loops over positions, float64: features (C, Py) and (C, Px) of one image, centred by `mu`
    (default: the target's mean feature)."""
    mu = fx.mean(axis=1, keepdims=True) if mu is None else mu
    y, x = fy - mu, fx - mu
    y = y / np.maximum(np.linalg.norm(y, axis=0, keepdims=True), 1e-12)
    x = x / np.maximum(np.linalg.norm(x, axis=0, keepdims=True), 1e-12)
    py, px = y.shape[1], x.shape[1]
    d = np.zeros((py, px))
    for i in range(py):
        for j in range(px):
            d[i, j] = max(0.0, 1.0 - float(y[:, i] @ x[:, j]))
    cx = np.zeros((py, px))
    for i in range(py):
        rel = d[i] / (d[i].min() + eps)
        w = np.exp((1.0 - rel) / h)
        cx[i] = w / w.sum()
    score = np.mean([cx[:, j].max() for j in range(px)])
    return -math.log(score + eps)


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------- eq. 9
def test_cycle_factors_are_powers_of_two_up_to_f():
    assert losses.cycle_factors(2) == [2]
    assert losses.cycle_factors(4) == [2, 4]
    assert losses.cycle_factors(16) == [2, 4, 8, 16]
    assert losses.cycle_factors(3) == [2, 3]


@pytest.mark.parametrize("scale", [2, 4])
def test_fidelity_loss_matches_float64_reference(scale):
    y, x = rand(2, 3, 16, 24, seed=1), rand(2, 3, 16, 24, seed=2)
    loss, terms = losses.fidelity_loss(y, x, scale)
    yn, xn = y.numpy(), x.numpy()
    expected_l1 = np.abs(yn - xn).mean()
    expected_cycle = sum(np.abs(ref_downscale(yn, k) - ref_downscale(xn, k)).mean()
                         for k in losses.cycle_factors(scale))
    assert float(terms["l1"]) == pytest.approx(expected_l1, rel=1e-10)
    assert float(terms["cycle"]) == pytest.approx(expected_cycle, rel=1e-9)
    assert float(loss) == pytest.approx(expected_l1 + expected_cycle, rel=1e-6)


def test_fidelity_terms_switch_off_and_gradients_flow():
    y, x = rand(1, 3, 8, 8, seed=3).requires_grad_(), rand(1, 3, 8, 8, seed=4)
    loss, terms = losses.fidelity_loss(y, x, 2, l1_weight=0.0, cycle_weight=2.0)
    assert set(terms) == {"cycle"}
    loss.backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_fidelity_l2_term_is_the_mean_squared_error_and_off_by_default():
    y, x = rand(2, 3, 16, 24, seed=5), rand(2, 3, 16, 24, seed=6)
    _, default_terms = losses.fidelity_loss(y, x, 2)
    assert "l2" not in default_terms
    loss, terms = losses.fidelity_loss(y, x, 2, l1_weight=0.0, cycle_weight=0.0, l2_weight=3.0)
    expected = 3.0 * ((y.numpy() - x.numpy()) ** 2).mean()
    assert set(terms) == {"l2"}
    assert float(terms["l2"]) == pytest.approx(expected, rel=1e-12)
    assert float(loss) == pytest.approx(expected, rel=1e-6)  # the total is summed in float32


# ---------------------------------------------------------------- eq. 12
def test_relativistic_losses_match_log_sigmoid_definition():
    c_real = torch.tensor([[0.3, -1.2], [4.0, 50.0]], dtype=torch.float64)
    c_fake = torch.tensor([[-0.7, 2.0], [4.0, -50.0]], dtype=torch.float64)
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))
    r, f = c_real.numpy(), c_fake.numpy()
    # -log sigmoid(z) computed as log1p(exp(-z)) for z where it is finite in float64
    expected_d = np.mean([-np.log(sig(a - b)) if a - b > -30 else b - a for a, b in zip(r.ravel(), f.ravel())])
    expected_g = np.mean([-np.log(sig(b - a)) if b - a > -30 else a - b for a, b in zip(r.ravel(), f.ravel())])
    assert float(losses.relativistic_d_loss(c_real, c_fake)) == pytest.approx(expected_d, rel=1e-9)
    assert float(losses.relativistic_g_loss(c_real, c_fake)) == pytest.approx(expected_g, rel=1e-9)
    # stable for large logit gaps (no inf / nan)
    big = losses.relativistic_g_loss(torch.tensor([1e4]), torch.tensor([-1e4]))
    assert torch.isfinite(big) and float(big) == pytest.approx(2e4)


# ---------------------------------------------------------------- contextual loss
def test_contextual_loss_matches_direct_loops():
    fy, fx = rand(2, 5, 3, 4, seed=5), rand(2, 5, 2, 3, seed=6)
    got = float(losses.contextual_loss(fy, fx))
    # the implementation centres by the target's mean feature over the whole batch
    mu = fx.numpy().transpose(1, 0, 2, 3).reshape(5, -1).mean(axis=1, keepdims=True)
    expected = np.mean([ref_contextual(fy[n].reshape(5, -1).numpy(), fx[n].reshape(5, -1).numpy(), mu)
                        for n in range(2)])
    assert got == pytest.approx(expected, rel=1e-5)


def test_contextual_loss_on_random_vgg_features_matches_loops_and_is_lower_for_identity():
    torch.manual_seed(0)
    vgg = VGG19Conv34().double().eval()
    a, b = rand(1, 3, 24, 24, seed=7), rand(1, 3, 24, 24, seed=8)
    with torch.no_grad():
        fa, fb = vgg(a), vgg(b)
    assert fa.shape == (1, 256, 6, 6)
    got = float(losses.contextual_loss(fa, fb))
    expected = ref_contextual(fa[0].reshape(256, -1).numpy(), fb[0].reshape(256, -1).numpy())
    assert got == pytest.approx(expected, rel=1e-6)
    same = float(losses.contextual_loss(fb, fb))
    assert got > 0.01 and same < got and same == pytest.approx(ref_contextual(fb[0].reshape(256, -1).numpy(),
                                                               fb[0].reshape(256, -1).numpy()), rel=1e-6)


# ---------------------------------------------------------------- eq. 11
def test_perceptual_generator_loss_is_the_weighted_sum_of_eq_11():
    torch.manual_seed(0)
    scale = 4
    disc = MultiscaleDiscriminator(scale, features=4).double()
    vgg = VGG19Conv34().double()
    y1, y0, x = rand(2, 3, 16, 16, seed=9), rand(2, 3, 16, 16, seed=10), rand(2, 3, 16, 16, seed=11)
    w = losses.PerceptualWeights()
    total, terms = losses.perceptual_generator_loss(y1, y0, x, scale, w, disc, vgg)
    factors = [2, 4]
    with torch.no_grad():
        c_real = disc([x] + [torch.from_numpy(ref_downscale(x.numpy(), k)) for k in factors])
        c_fake = disc([y1] + [torch.from_numpy(ref_downscale(y1.numpy(), k)) for k in factors])
    gan = np.mean(np.log1p(np.exp(-(c_fake - c_real).numpy())))
    cyc1 = sum(np.abs(ref_downscale(y1.numpy(), k) - ref_downscale(x.numpy(), k)).mean() for k in factors)
    cyc0 = sum(np.abs(ref_downscale(y0.numpy(), k) - ref_downscale(x.numpy(), k)).mean() for k in factors)
    with torch.no_grad():
        cx = float(losses.contextual_loss(vgg(y1), vgg(x)))
    expected = {"gan": 0.001 * gan, "cycle_w1": 0.1 / 2 * cyc1, "cx": 0.1 * cx,
                "l1_w0": 10 * np.abs(y0.numpy() - x.numpy()).mean(), "cycle_w0": 0.1 / 2 * cyc0}
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert float(terms[name]) == pytest.approx(value, rel=1e-6), name
    assert float(total.detach()) == pytest.approx(sum(expected.values()), rel=1e-6)


def test_perceptual_terms_switch_off():
    y1, x = rand(1, 3, 8, 8, seed=12), rand(1, 3, 8, 8, seed=13)
    w = losses.PerceptualWeights(gan=0.0, cx=0.0, l1_w0=0.0, cycle_w0=0.0)
    total, terms = losses.perceptual_generator_loss(y1, None, x, 2, w)
    assert set(terms) == {"cycle_w1"}
    w_none = losses.PerceptualWeights(gan=0.0, cycle_w1=0.0, cx=0.0, l1_w0=0.0, cycle_w0=0.0)
    total, terms = losses.perceptual_generator_loss(y1, None, x, 2, w_none)
    assert terms == {} and float(total) == 0.0


def test_discriminator_loss_uses_detached_fakes():
    torch.manual_seed(0)
    disc = MultiscaleDiscriminator(2, features=4).double()
    y1 = rand(2, 3, 8, 8, seed=14).requires_grad_()
    x = rand(2, 3, 8, 8, seed=15)
    loss = losses.discriminator_loss(disc, y1, x, 2)
    loss.backward()
    assert y1.grad is None
    assert all(p.grad is not None for p in disc.parameters())
    with torch.no_grad():
        c_real = disc([x, losses.downscale(x, 2)])
        c_fake = disc([y1, losses.downscale(y1, 2)])
    assert float(loss.detach()) == pytest.approx(float(np.mean(np.log1p(np.exp(-(c_real - c_fake).numpy())))), rel=1e-9)
