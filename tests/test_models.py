"""Tests of MGBPv2 / MGBP-3D (Algorithm 1, Cube-to-Cube, Table I presets).

References are independent of the module: a literal float64 re-computation of Algorithm 1 that forms the tags
on the fly and calls the functional convolutions; closed-form parameter and MAC counts computed here; the
published parameter counts of the authors' configurations (anchors.md: 46.5 M for x4 LE4 MU4
FE192-128-64-32 K3, 28.2 M for the AIM-2019 x16 LE5 MU2 FE256-192-128-48-9, 3.54 M for the feasibility run);
the paper's 37 -> 29 frames.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mgbp.errors import ConfigError
from mgbp.models import PRESETS, MGBPv2, MGBPv2Config, build_model
from mgbp.models.mgbpv2 import BackProjectionStep, count_parameters, macs_per_output_pixel
from mgbp.resize import imresize

TINY = {"levels": 3, "mu": 2, "channels": (6, 5, 4)}


def tiny(**overrides) -> MGBPv2:
    torch.manual_seed(0)
    return MGBPv2(MGBPv2Config(**{**TINY, "scale": 2, **overrides}))


# ---- independent reference: Algorithm 1 written out literally --------------------------------------------


def reference_valid_size(size: int, cfg: MGBPv2Config) -> int:
    """Brute force: the smallest n >= size whose L-1 stride-2 reductions are all exact."""
    n = size
    while True:
        m, ok = n, True
        for _ in range(cfg.levels - 1):
            if cfg.padding == "same":
                ok, m = ok and m % 2 == 0, m // 2
            else:
                ok, m = (
                    ok and (m - cfg.kernel_size) % 2 == 0 and m >= cfg.kernel_size,
                    (m - cfg.kernel_size) // 2 + 1,
                )
        if ok:
            return n
        n += 1


def reference_forward(model: MGBPv2, lr: torch.Tensor, W: float, noise: torch.Tensor) -> torch.Tensor:
    cfg = model.config
    P = {k: v.double() for k, v in model.state_dict().items()}
    conv = F.conv2d if cfg.dims == 2 else F.conv3d
    conv_t = F.conv_transpose2d if cfg.dims == 2 else F.conv_transpose3d

    def geometry(weight, spatial_stride, transposed=False):
        k, kt = weight.shape[-1], (weight.shape[2] if cfg.dims == 3 else 1)
        p = (k - 1) // 2 if cfg.padding == "same" else 0
        pt = (kt - 1) // 2 if cfg.temporal_padding == "same" else 0
        op = 1 if (transposed and cfg.padding == "same" and spatial_stride == 2) else 0
        if cfg.dims == 2:
            return dict(stride=spatial_stride, padding=p, **({"output_padding": op} if transposed else {}))
        out = {"stride": (1, spatial_stride, spatial_stride), "padding": (pt, p, p)}
        if transposed:
            out["output_padding"] = (0, op, op)
        return out

    X = imresize(lr.double(), scale=cfg.scale)
    x = torch.cat([X, W * noise.double()], 1)  # line 1
    h, w = x.shape[-2:]
    H, Wd = reference_valid_size(h, cfg), reference_valid_size(w, cfg)
    top, left = H - h - (H - h) // 2, Wd - w - (Wd - w) // 2
    pads = (left, Wd - w - left, top, H - h - top) + ((0, 0) if cfg.dims == 3 else ())
    x = F.pad(x, pads, mode="reflect")
    image, nmap = x[:, : cfg.image_channels], x[:, cfg.image_channels :]
    inp = image if cfg.noise_features else x
    L, K = cfg.levels, cfg.kernel_size
    y, z = [], []
    for k in range(1, L + 1):  # lines 2-4
        s = 2 ** (L - k)
        wk = P[f"analysis.{k - 1}.weight"]
        assert wk.shape[-1] == (K - 1) * (s - 1) + 1  # the authors' Analysis kernel
        y.append(conv(inp, wk, P[f"analysis.{k - 1}.bias"], **geometry(wk, s)))
        if cfg.noise_features and k < L:
            wn = P[f"noise_analysis.{k - 1}.weight"]
            z.append(conv(nmap, wn, P[f"noise_analysis.{k - 1}.bias"], **geometry(wn, s)))

    def BP(u, k, prefix):
        out = u
        if k > 1:
            for s in range(1, cfg.mu + 1):
                tag = f"{prefix}.L{k}.s{s}"
                wd, wu = P[f"{tag}.down.weight"], P[f"{tag}.up.weight"]
                LR = conv(out, wd, P[f"{tag}.down.bias"], **geometry(wd, 2))  # line 5
                c = BP(LR, k - 1, tag)  # line 6
                lifted = torch.cat([y[k - 2], c] + ([z[k - 2]] if cfg.noise_features else []), 1)
                out = out + conv_t(F.relu(lifted), wu, P[f"{tag}.up.bias"], **geometry(wu, 2, True))  # line 7
        return out

    out = BP(y[L - 1], L, "bp")  # line 8
    Y = conv(out, P["synthesis.weight"], P["synthesis.bias"]) + image  # line 9 + residual
    t = (L - 1) * (cfg.temporal_kernel - 1) // 2 if (cfg.dims == 3 and cfg.temporal_padding == "none") else 0
    Y = Y[..., top : top + h, left : left + w]
    return Y[:, :, t : Y.shape[2] - t] if cfg.dims == 3 else Y


@pytest.mark.parametrize(
    "overrides,shape",
    [
        ({}, (2, 3, 5, 6)),
        ({"padding": "same"}, (2, 3, 7, 4)),
        ({"noise_features": 0}, (1, 3, 6, 5)),
        ({"padding": "same", "noise_features": 0, "scale": 3}, (2, 3, 5, 5)),
        ({"dims": 3}, (2, 3, 4, 5, 4)),
        ({"dims": 3, "temporal_padding": "none", "padding": "same"}, (1, 3, 7, 4, 5)),
    ],
)
def test_forward_matches_literal_algorithm_1(overrides, shape):
    model = tiny(**overrides).double()
    torch.manual_seed(1)
    lr = torch.rand(shape, dtype=torch.float64)
    big = imresize(lr, scale=model.scale)
    noise = torch.randn((shape[0], model.noise_channels) + tuple(big.shape[2:]), dtype=torch.float64)
    got = model(lr, noise_amp=0.7, noise=noise)
    want = reference_forward(model, lr, 0.7, noise)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "overrides,shape",
    [({}, (2, 3, 5, 6)), ({"padding": "same"}, (2, 3, 7, 4)), ({"noise_features": 0}, (1, 3, 6, 5)),
     ({"dims": 3}, (2, 3, 4, 5, 4))],
)
def test_inference_at_w_0_matches_literal_algorithm_1_with_zero_noise(overrides, shape):
    """At W = 0 without autograd the noise analyses are not run on the zero map (their biases stand in for them):
    still Algorithm 1 with N = 0 to 1e-10."""
    model = tiny(**overrides).double().eval()
    torch.manual_seed(2)
    for analysis in model.noise_analysis:  # biases that matter: not the zeros they start from
        torch.nn.init.uniform_(analysis.bias, 0.2, 1.0)  # positive: they pass the ReLU of the Upscales
    lr = torch.rand(shape, dtype=torch.float64)
    big = imresize(lr, scale=model.scale)
    zeros = torch.zeros((shape[0], model.noise_channels) + tuple(big.shape[2:]), dtype=torch.float64)
    with torch.inference_mode():
        got = model(lr)
    assert torch.allclose(got, reference_forward(model, lr, 0.0, zeros), atol=1e-10, rtol=0)


def test_inference_at_w_0_under_bf16_autocast_matches_convolving_the_zero_map():
    """Under autocast (`amp: bf16` validation) the biases stand in in the features' dtype, as the convolution
    would have given them (a float32 stand-in could not be written into the bf16 Upscale inputs)."""
    model = tiny().eval()
    torch.manual_seed(3)
    for analysis in model.noise_analysis:
        torch.nn.init.uniform_(analysis.bias, 0.2, 1.0)
    lr = torch.rand((2, 3, 6, 7))
    zeros = torch.zeros((2, model.noise_channels, *imresize(lr, scale=model.scale).shape[2:]))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = model(lr), model(lr, noise=zeros)
    assert got.dtype == want.dtype and torch.equal(got, want)


def test_residual_output_is_bicubic_when_synthesis_is_zero():
    model = tiny()
    with torch.no_grad():
        model.synthesis.weight.zero_()
        model.synthesis.bias.zero_()
    lr = torch.rand(2, 3, 5, 7)
    assert torch.equal(model(lr), imresize(lr, scale=2))
    no_residual = tiny(residual=False)
    with torch.no_grad():
        no_residual.synthesis.weight.zero_()
        no_residual.synthesis.bias.zero_()
    assert torch.count_nonzero(no_residual(lr)) == 0


# ---- presets and counts ----------------------------------------------------------------------------------


def closed_form_parameters(cfg: MGBPv2Config) -> int:
    """Count by hand: Analyses, noise Analyses, mu^(L-k+1) Downscale/Upscale pairs per level gap, Synthesis."""
    L, K, c, b = cfg.levels, cfg.kernel_size, cfg.channels, int(cfg.bias)
    kt = cfg.temporal_kernel if cfg.dims == 3 else 1
    a_in = 3 + (cfg.noise_channels if cfg.noise_features == 0 else 0)
    total = c[-1] * 3 + b * 3
    for k in range(1, L + 1):
        s = 2 ** (L - k)
        vol = ((K - 1) * (s - 1) + 1) ** 2 * (1 + (L - k) * (kt - 1))
        total += vol * a_in * c[k - 1] + b * c[k - 1]
        if cfg.noise_features and k < L:  # no noise analysis at the top: no Upscale reads it
            total += vol * cfg.noise_channels * cfg.noise_features + cfg.noise_features
    for k in range(2, L + 1):
        pairs = cfg.mu ** (L - k + 1)
        down = K * K * kt * c[k - 1] * c[k - 2] + b * c[k - 2]
        up = K * K * kt * (2 * c[k - 2] + cfg.noise_features) * c[k - 1] + b * c[k - 1]
        total += pairs * (down + up)
    return total


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_on_meta_with_the_closed_form_count(name):
    model = build_model(name, device="meta")
    assert count_parameters(model) == closed_form_parameters(model.config)
    assert model.family == ("mgbp3d" if model.config.dims == 3 else "mgbpv2")
    assert model.is_video == (model.config.dims == 3)
    assert model.scale == PRESETS[name].config["scale"]
    assert model.noise_channels == 1 and model.border_lr > 0
    dataclasses.asdict(model.config)  # JSON-able config


def test_table_i_configurations():
    table = {  # Table I: factor, mu, levels, channels
        "mgbpv2-x2": (2, 32, 2, (192, 128)),
        "mgbpv2-x3": (3, 32, 2, (192, 128)),
        "mgbpv2-x4": (4, 4, 4, (192, 128, 64, 32)),
        "mgbpv2-x8": (8, 2, 5, (192, 128, 64, 32, 16)),
        "mgbpv2-x16": (16, 2, 6, (256, 192, 128, 92, 48, 9)),
        "mgbp3d-x4": (4, 6, 4, (192, 128, 64, 32)),
        "mgbp3d-x16": (16, 2, 6, (256, 192, 128, 92, 48, 9)),
    }
    for name, (f, mu, levels, channels) in table.items():
        cfg = PRESETS[name].make_config()
        assert (cfg.scale, cfg.mu, cfg.levels, cfg.channels) == (f, mu, levels, channels), name
        assert cfg.dims == (3 if name.startswith("mgbp3d") else 2)


def test_parameter_counts_match_the_authors_configurations():
    """Channel lists run lowest resolution first: only that order gives the authors' published counts."""
    x4 = count_parameters(build_model("mgbpv2-x4", device="meta"))
    assert round(x4 / 1e5) == 465  # 46.5 M (anchors.md, authors' LE4 MU4 FE192-128-64-32 K3)
    reversed_x4 = count_parameters(build_model("mgbpv2-x4", device="meta", channels=(32, 64, 128, 192)))
    assert round(reversed_x4 / 1e5) != 465
    # AIM-2019 x16 (authors' model.py: 3-channel noise input, NOISE1): 28.2 M
    aim = build_model(
        "mgbpv2-x16", device="meta", levels=5, channels=(256, 192, 128, 48, 9), noise_channels=3
    )
    assert round(count_parameters(aim) / 1e5) == 282
    assert round(count_parameters(build_model("fast-x4", device="meta")) / 1e4) == 354  # 3.54 M


@pytest.mark.parametrize("mu,levels", [(1, 2), (3, 2), (2, 3), (2, 4), (3, 3)])
def test_module_count_is_mu_plus_mu_squared_and_so_on(mu, levels):
    model = MGBPv2(MGBPv2Config(levels=levels, mu=mu, channels=(2,) * levels))
    expected = sum(mu**j for j in range(1, levels))
    downs = [n for n, _ in model.named_modules() if n.endswith(".down")]
    ups = [n for n, _ in model.named_modules() if n.endswith(".up")]
    assert len(downs) == len(ups) == len(model.tags()) == expected
    assert len(set(model.tags())) == expected
    # every call site owns its weights
    ids = {id(m.down.weight) for m in model.modules() if isinstance(m, BackProjectionStep)}
    assert len(ids) == expected


def test_tags_show_the_w_cycle():
    names = {n for n, _ in build_model("tiny").named_modules()}
    assert "bp.L3.s2.L2.s1.down" in names and "bp.L3.s1.up" in names
    assert "bp.L3.s3" not in names and "bp.L3.s1.L2.s1.L1" not in names


def test_macs_formula_matches_counted_convolutions():
    """Count MACs of every convolution torch runs (FlopCounterMode: 2 FLOPs per MAC, transposed ones too);
    'same' padding makes grids exact. The bicubic upscale is given (`upscaled=`): the formula leaves it out."""
    from torch.utils.flop_counter import FlopCounterMode

    for overrides, shape in [
        ({"padding": "same"}, (1, 3, 8, 8)),
        ({"padding": "same", "dims": 3}, (1, 3, 3, 4, 4)),
    ]:
        model = tiny(**overrides)
        upscaled = imresize(torch.rand(shape), scale=model.scale)
        with FlopCounterMode(display=False) as counter:
            out = model(None, upscaled=upscaled)
        pixels = out[0, 0].numel()
        assert counter.get_total_flops() / 2 / pixels == pytest.approx(macs_per_output_pixel(model.config), rel=1e-12)


# ---- running: sizes, batches, 2D and 3D -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "tiny-3d"])
@pytest.mark.parametrize("size", [(6, 6), (5, 7), (1, 2)])
def test_tiny_presets_run_on_even_and_odd_sizes(name, size):
    model = build_model(name)
    f = model.scale
    lr = torch.rand((2, 3, 3) + size if model.is_video else (2, 3) + size)
    out = model(lr, noise_amp=0.5)
    expected = lr.shape[:-2] + (f * size[0], f * size[1])
    assert out.shape == expected
    assert torch.isfinite(out).all()


def test_cube_to_cube_every_step_keeps_its_size():
    for overrides in ({}, {"padding": "same"}, {"dims": 3}, {"dims": 3, "temporal_padding": "none"}):
        model = tiny(**overrides)
        seen = []
        for m in model.modules():
            if isinstance(m, BackProjectionStep):
                m.register_forward_hook(
                    lambda mod, inp, out, seen=seen: seen.append(inp[0].shape == out.shape)
                )
        lr = torch.rand((1, 3, 9, 5, 6) if model.is_video else (1, 3, 5, 6))
        out = model(lr)
        assert seen and all(seen)
        if model.is_video and model.config.temporal_padding == "same":
            assert out.shape[2] == 9  # T frames in, T frames out


def frames_per_level(model: MGBPv2, frames: int, size: int = 4) -> list[int]:
    """Frames of each level's analysis output, lowest level first."""
    got = []
    hooks = [a.register_forward_hook(lambda m, i, o: got.append(o.shape[2])) for a in model.analysis]
    out = model(torch.rand(1, 3, frames, size, size))
    for h in hooks:
        h.remove()
    return got, out.shape[2]


def test_no_temporal_padding_frame_arithmetic_and_the_papers_37_to_29():
    # the paper: 37 frames, temporal kernel 3, no padding -> 29 frames at the lowest level (4 level steps)
    five = MGBPv2(MGBPv2Config(dims=3, scale=16, levels=5, mu=1, channels=(2,) * 5, temporal_padding="none"))
    levels, out_frames = frames_per_level(five, 37, size=2)
    assert levels == [29, 31, 33, 35, 37]
    assert five.frames_consumed == 4 and out_frames == 37 - 2 * 4
    # the 6-level Table I x16 layout loses one more level step: 37 -> 27
    six = MGBPv2(MGBPv2Config(dims=3, scale=16, levels=6, mu=1, channels=(2,) * 6, temporal_padding="none"))
    assert six.frames_consumed == 5
    preset = build_model("mgbp3d-x16", device="meta", temporal_padding="none")
    assert preset.frames_consumed == 5 and build_model("mgbp3d-x16", device="meta").frames_consumed == 0
    # temporal kernel 5 loses 4 frames per level
    k5 = tiny(dims=3, temporal_padding="none", temporal_kernel=5)
    levels, out_frames = frames_per_level(k5, 11)
    assert levels == [3, 7, 11] and k5.frames_consumed == 4 and out_frames == 3
    with pytest.raises(ConfigError):
        k5(torch.rand(1, 3, 8, 4, 4))  # too short: nothing left at the lowest level
    same = tiny(dims=3)
    assert frames_per_level(same, 5)[0] == [5, 5, 5] and same.frames_consumed == 0


# ---- noise ----------------------------------------------------------------------------------------------


def test_noise_determinism_variation_and_reproducibility():
    model = build_model("tiny")
    lr = torch.rand(2, 3, 5, 6)
    assert torch.equal(model(lr), model(lr))  # W = 0 is deterministic
    assert torch.equal(model(lr, noise_amp=0.0), model(lr, noise_amp=0.0, noise=torch.randn(2, 1, 20, 24)))
    a, b = model(lr, noise_amp=1.0), model(lr, noise_amp=1.0)
    assert (a - b).abs().max() > 1e-4  # W > 0 varies
    n = torch.randn(2, 1, 20, 24)
    assert torch.equal(model(lr, noise_amp=1.0, noise=n), model(lr, noise_amp=1.0, noise=n))
    with pytest.raises(ConfigError):
        model(lr, noise_amp=1.0, noise=torch.randn(2, 1, 5, 6))


def test_per_sample_noise_amplitude():
    model = build_model("tiny")
    lr = torch.rand(1, 3, 5, 6).expand(3, -1, -1, -1)
    n = torch.randn(1, 1, 20, 24).expand(3, -1, -1, -1)
    out = model(lr, noise_amp=torch.tensor([0.0, 0.5, 2.0]), noise=n)
    for i, w in enumerate((0.0, 0.5, 2.0)):
        assert torch.allclose(out[i : i + 1], model(lr[:1], noise_amp=w, noise=n[:1]), atol=1e-6)
    assert not torch.allclose(out[1], out[2])


def test_upscaled_input_is_used_instead_of_bicubic():
    model = build_model("tiny")
    lr = torch.rand(1, 3, 5, 6)
    assert torch.equal(model(lr), model(None, upscaled=imresize(lr, scale=4)))


# ---- training-related -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "tiny-3d"])
def test_gradients_reach_every_parameter(name):
    model = build_model(name)
    lr = torch.rand((2, 3, 3, 5, 5) if model.is_video else (2, 3, 5, 5))
    model(lr, noise_amp=0.5).square().mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not dead


def test_forward_builds_no_modules(monkeypatch):
    model = build_model("tiny")
    built = []
    original = torch.nn.Module.__init__

    def spy(self, *args, **kwargs):
        built.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__init__", spy)
    model(torch.rand(1, 3, 5, 5), noise_amp=0.3)
    assert built == []


def test_border_lr_bounds_the_influence_of_an_lr_pixel():
    """Changing one LR pixel must leave every output pixel farther than border_lr LR pixels unchanged."""
    for overrides in ({"scale": 4}, {"scale": 4, "padding": "same"}):
        model = tiny(**overrides)
        size = 2 * model.border_lr + 9
        lr = torch.rand(1, 3, size, size)
        bumped = lr.clone()
        c = size // 2
        bumped[..., c, c] += 1.0
        with torch.no_grad():
            diff = (model(lr) - model(bumped)).abs().amax(dim=(0, 1))
        rows, cols = torch.nonzero(diff > 0, as_tuple=True)
        f = model.scale
        reach = max((rows // f - c).abs().max().item(), (cols // f - c).abs().max().item())
        assert 0 < reach <= model.border_lr


def test_bad_configs_raise_config_error():
    for bad in (
        {"channels": (4, 4)},
        {"kernel_size": 4},
        {"padding": "full"},
        {"dims": 1},
        {"temporal_padding": "causal"},
        {"noise_channels": 0, "noise_features": 1},
    ):
        with pytest.raises(ConfigError):
            MGBPv2Config(**{**TINY, **bad})
    with pytest.raises(ConfigError):
        build_model("no-such-preset")
    with pytest.raises(ConfigError):
        build_model("tiny", widht=3)
    with pytest.raises(ConfigError):
        build_model("tiny")(torch.rand(1, 3, 2, 4, 4))  # a clip into an image model


# ---- clip length of 3D models -----------------------------------------------------------------------------


def test_clip_length_is_a_3d_config_field():
    assert build_model("tiny-3d").clip_length == 5 == build_model("tiny-3d").config.frames  # our default
    assert build_model("mgbp3d-x16", device="meta").clip_length == 37  # the paper's x16 training clips
    assert build_model("tiny-3d", frames=9).clip_length == 9
    image_model = build_model("tiny")
    assert image_model.config.frames is None and image_model.clip_length is None
    # without temporal padding the default clip still yields 5 output frames
    unpadded = build_model("tiny-3d", temporal_padding="none")
    assert unpadded.config.frames == 5 + 2 * unpadded.frames_consumed
    with pytest.raises(ConfigError, match="dims=3"):
        build_model("tiny", frames=5)
    with pytest.raises(ConfigError, match="too short"):
        build_model("tiny-3d", temporal_padding="none", frames=4)  # consumes 2 frames at each end
