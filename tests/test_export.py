"""ONNX export (`mgbp export`, `mgbp.export`): the graph run by ONNX Runtime against the torch model.

The reference is always the torch model's own `forward` (its bicubic and its valid-size padding written with
Python arithmetic), run on the same inputs; the exported graph has its own traceable padding and must agree
within 1e-4 at several sizes (odd ones, unequal sides, a batch of two), at W = 0 and at W = 1 with a given
noise map. onnx and onnxruntime are the optional extra `mgbp[onnx]` (installed by the README's command).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from mgbp import export
from mgbp.cli import main
from mgbp.export import ExportOptions, export_onnx, onnx_session, valid_padding
from mgbp.models import build_model, load_model, save_model

onnx = pytest.importorskip("onnx")  # the optional extra mgbp[onnx], with onnxruntime
pytest.importorskip("onnxruntime")

SIZES = [(1, 2, 3), (1, 7, 9), (2, 13, 5), (1, 16, 11)]  # (batch, LR height, LR width)


def random_tiny(seed: int = 0, **overrides):
    """The `tiny` preset with weights large enough that every layer changes the output (at initialisation
    the Synthesis is scaled down to stay near bicubic) but most outputs stay inside (0, 1), unclamped."""
    torch.manual_seed(seed)
    model = build_model("tiny", **overrides).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(0.15 * torch.randn_like(param))
    return model


def inputs(model, batch, h, w, noise_amp, seed=1):
    generator = torch.Generator().manual_seed(seed)
    f = model.scale
    image = torch.rand(batch, 3, h, w, generator=generator)
    noise = torch.randn(batch, 1, f * h, f * w, generator=generator)
    return image, torch.full((batch,), float(noise_amp)), noise


def torch_output(model, image, noise_amp, noise):
    with torch.no_grad():
        return model(image, noise_amp=noise_amp, noise=noise).clamp(0, 1).numpy()


def graph_dims(path, which="input"):
    graph = onnx.load(str(path)).graph
    values = graph.input if which == "input" else graph.output
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


# ------------------------------------------------------------------------------------------------ padding


@pytest.mark.parametrize("overrides", [{}, {"padding": "same"}, {"levels": 4, "channels": (12, 8, 6, 4)},
                                       {"scale": 2}, {"scale": 3, "kernel_size": 5},
                                       {"scale": 2, "padding": "same", "levels": 4, "channels": (12, 8, 6, 4)}])
def test_traceable_padding_equals_the_models_valid_size_padding(overrides):
    model = build_model("tiny", **overrides)
    base, step = export.padding_geometry(model.config)
    first = model.scale * export.smallest_side(model)
    for length in range(first, first + 4 * step + 3):
        before, after = valid_padding(length, base, step)
        assert (before, after) == model._axis_padding(length)
        assert model.valid_size(length + before + after) == length + before + after
        assert max(before, after) < length  # reflection applies


def test_smallest_side_is_the_first_size_the_model_pads_by_reflection():
    for overrides in ({}, {"scale": 2}, {"levels": 4, "channels": (12, 8, 6, 4)}):
        model = build_model("tiny", **overrides)
        side = export.smallest_side(model)
        assert model._pad_mode(model.tile_padding((model.scale * side,) * 2), *(model.scale * side,) * 2,
                               None) == "reflect"
        base, _ = export.padding_geometry(model.config)
        assert model.scale * (side - 1) < base  # one less would need more than step - 1 pixels of padding


# ------------------------------------------------------------------------------------------------ shipped


@pytest.fixture(scope="module")
def shipped_x4(tmp_path_factory):
    model = load_model("mgbp-x4", device="cpu")
    path = tmp_path_factory.mktemp("onnx") / "mgbp-x4.onnx"
    report = export_onnx(model, path, ExportOptions(), label="mgbp-x4")
    return model, path, report


def test_shipped_model_matches_torch_at_odd_sizes_at_w0_and_w1(shipped_x4):
    model, path, report = shipped_x4
    assert report.max_difference is not None and report.max_difference <= 1e-4
    session = onnx_session(path)
    for batch, h, w in SIZES:
        for amp in (0.0, 1.0):
            image, noise_amp, noise = inputs(model, batch, h, w, amp)
            out = session.run(["output"], {"image": image.numpy(), "noise_amp": noise_amp.numpy(),
                                           "noise": noise.numpy()})[0]
            reference = torch_output(model, image, noise_amp, noise)
            assert out.shape == (batch, 3, 4 * h, 4 * w)
            np.testing.assert_allclose(out, reference, rtol=0, atol=1e-4, err_msg=f"{h}x{w} W={amp}")
    # W = 1 really moved the output (the noise input is wired in)
    image, noise_amp, noise = inputs(model, 1, 7, 9, 1.0)
    zero = session.run(["output"], {"image": image.numpy(), "noise_amp": np.zeros(1, np.float32),
                                    "noise": noise.numpy()})[0]
    one = session.run(["output"], {"image": image.numpy(), "noise_amp": noise_amp.numpy(),
                                   "noise": noise.numpy()})[0]
    assert np.abs(one - zero).max() > 1e-3


def test_graph_declares_dynamic_batch_height_width_and_its_metadata(shipped_x4):
    _, path, _ = shipped_x4
    dims = graph_dims(path)
    assert dims == {"image": ["batch", 3, "height", "width"], "noise_amp": ["batch"],
                    "noise": ["batch", 1, "height_x4", "width_x4"]}
    assert graph_dims(path, "output") == {"output": ["batch", 3, "height_x4", "width_x4"]}
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["scale"] == "4" and props["min_input_side"] == "2" and props["mgbp_model"] == "mgbp-x4"
    assert onnx.load(str(path)).opset_import[0].version == export.DEFAULT_OPSET


def test_export_leaves_the_torch_model_usable_and_unchanged(shipped_x4):
    model, _, _ = shipped_x4
    assert next(model.parameters()).dtype == torch.float32
    out = model(torch.rand(1, 3, 5, 6))
    assert type(out) is torch.Tensor and out.shape == (1, 3, 20, 24)
    out.sum().item()  # a real tensor (not a tracing or fake one)


# ------------------------------------------------------------------------------------------------ variants


def test_image_only_w0_matches_torch_and_takes_one_input(tmp_path):
    model = random_tiny()
    path = tmp_path / "one.onnx"
    export_onnx(model, path, ExportOptions(image_only=True, opset=13))
    assert list(graph_dims(path)) == ["image"]
    assert onnx.load(str(path)).opset_import[0].version == 13
    session = onnx_session(path)
    inside = []
    for batch, h, w in SIZES:
        image = inputs(model, batch, h, w, 0.0)[0]
        out = session.run(["output"], {"image": image.numpy()})[0]
        reference = torch_output(model, image, 0.0, None)
        np.testing.assert_allclose(out, reference, rtol=0, atol=1e-4)
        inside.append(np.mean((reference > 0) & (reference < 1)))
    assert min(inside) > 0.5  # the comparison is not decided by the clamp


def test_image_only_with_noise_draws_a_fresh_map_in_the_graph(tmp_path):
    model = random_tiny()
    path = tmp_path / "noisy.onnx"
    report = export_onnx(model, path, ExportOptions(image_only=True, noise_amp=0.5, static_size=(7, 9), opset=20))
    assert report.max_difference is None and "own noise" in report.check_note
    assert graph_dims(path) == {"image": [1, 3, 7, 9]}
    assert any(node.op_type.startswith("RandomNormal") for node in onnx.load(str(path)).graph.node)
    session = onnx_session(path)
    image = inputs(model, 1, 7, 9, 0.0)[0].numpy()
    first, second = (session.run(["output"], {"image": image})[0] for _ in range(2))
    clean = torch_output(model, torch.from_numpy(image), 0.0, None)
    assert first.shape == (1, 3, 28, 36) and np.all((first >= 0) & (first <= 1))
    assert np.abs(first - second).max() > 1e-4 and np.abs(first - clean).max() > 1e-4
    with pytest.raises(Exception, match="[Dd]imension"):  # a static graph refuses another size
        session.run(["output"], {"image": np.zeros((1, 3, 8, 9), np.float32)})


def test_half_precision_graph_is_float16_and_close_to_float32_torch(tmp_path):
    model = random_tiny()
    path = tmp_path / "half.onnx"
    report = export_onnx(model, path, ExportOptions(half=True))
    assert report.max_difference is not None and report.max_difference <= 1e-2
    graph = onnx.load(str(path)).graph
    assert {v.type.tensor_type.elem_type for v in (*graph.input, *graph.output)} == {onnx.TensorProto.FLOAT16}
    image, noise_amp, noise = inputs(model, 1, 13, 5, 1.0)
    out = onnx_session(path).run(["output"], {"image": image.half().numpy(), "noise_amp": noise_amp.half().numpy(),
                                              "noise": noise.half().numpy()})[0]
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), torch_output(model, image, noise_amp, noise), atol=1e-2)
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is untouched


def test_a_failed_check_writes_nothing(tmp_path, monkeypatch):
    model = random_tiny()
    monkeypatch.setattr(export, "reference_output", lambda model, args, names: np.full((1, 3, 32, 20), 7.0))
    path = tmp_path / "bad.onnx"
    with pytest.raises(export.MgbpError, match="differs from torch"):
        export_onnx(model, path, ExportOptions())
    assert list(tmp_path.iterdir()) == []


def test_an_exporter_failure_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported op\nlong traceback-like detail")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(export.MgbpError, match="^the torchscript exporter failed: Unsupported op$"):
        export_onnx(random_tiny(), tmp_path / "m.onnx", ExportOptions())
    assert list(tmp_path.iterdir()) == []


def test_without_onnxruntime_the_file_is_written_unchecked(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    report = export_onnx(random_tiny(), tmp_path / "m.onnx", ExportOptions(image_only=True))
    assert report.max_difference is None and "onnxruntime is not installed" in report.check_note
    assert (tmp_path / "m.onnx").stat().st_size > 0


# ------------------------------------------------------------------------------------------------ command


def test_command_exports_a_weight_file(tmp_path, capsys):
    weights = save_model(random_tiny(), tmp_path / "net.safetensors")
    assert main(["export", str(weights), "-o", str(tmp_path / "net.onnx")]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "inputs image, noise_amp, noise" in out and "ONNX Runtime matches torch" in out
    model = load_model(weights)
    image, noise_amp, noise = inputs(model, 1, 9, 7, 1.0)
    got = onnx_session(tmp_path / "net.onnx").run(["output"], {"image": image.numpy(), "noise_amp":
                                                              noise_amp.numpy(), "noise": noise.numpy()})[0]
    np.testing.assert_allclose(got, torch_output(model, image, noise_amp, noise), atol=1e-4)


@pytest.mark.parametrize("extra, message", [
    (["-o", "{tmp}/m.txt"], "must be an .onnx file"),
    (["-o", "{tmp}/m.onnx", "--static", "abc"], "HEIGHTxWIDTH"),
    (["-o", "{tmp}/m.onnx", "--static", "1x5"], "needs at least 2 pixels"),
    (["-o", "{tmp}/m.onnx", "-W", "0.5"], "--image-only"),
    (["-o", "{tmp}/m.onnx", "--image-only", "-W", "-1"], "finite number >= 0"),
    (["-o", "{tmp}/m.onnx", "--opset", "21"], "opsets 13 to 20"),
    (["-o", "{tmp}/m.onnx", "--opset", "17", "--exporter", "dynamo"], "opsets 18 to 23"),
])
def test_bad_options_are_one_line_errors_and_write_nothing(tmp_path, capsys, extra, message):
    args = ["export", "mgbp-x4"] + [a.format(tmp=tmp_path) for a in extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_video_models_and_unknown_models_are_refused(tmp_path, capsys):
    assert main(["export", "mgbp-x4-video", "-o", str(tmp_path / "v.onnx")]) == 2
    assert "image MGBPv2 models" in capsys.readouterr().err
    assert main(["export", "no-such-model", "-o", str(tmp_path / "v.onnx")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_is_kept_without_overwrite(tmp_path, capsys):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"keep")
    assert main(["export", "mgbp-x4", "-o", str(target)]) == 2
    assert "exists" in capsys.readouterr().err and target.read_bytes() == b"keep"


def test_command_is_listed_in_help():
    result = subprocess.run([sys.executable, "-m", "mgbp.cli", "--help"], capture_output=True, text=True,
                            check=False, timeout=60)
    assert "export" in result.stdout


def test_a_noise_mask_is_in_the_graph(tmp_path):
    """x = [X, W m(X) N] (mgbp.models.noise_mask): the exported graph shapes the noise as torch does."""
    from mgbp.models.noise_mask import NoiseMask

    torch.manual_seed(0)
    model = build_model("tiny", noise_mask=NoiseMask(flat=1.0, busy=10.0, busy_floor=0.5, gain=1.25)).eval()
    with torch.no_grad():
        model.synthesis.weight.mul_(100.0)
    path = tmp_path / "masked.onnx"
    export_onnx(model, path, ExportOptions(), label="masked")
    session = onnx_session(path)
    image, noise_amp, noise = inputs(model, 1, 13, 11, 1.0)
    image[..., :5] = 0.5  # a flat strip, where the mask switches the noise off
    out = session.run(["output"], {"image": image.numpy(), "noise_amp": noise_amp.numpy(), "noise": noise.numpy()})[0]
    np.testing.assert_allclose(out, torch_output(model, image, noise_amp, noise), rtol=0, atol=1e-4)
    unmasked = build_model("tiny").eval()
    unmasked.load_state_dict(model.state_dict())
    assert np.abs(out - torch_output(unmasked, image, noise_amp, noise)).max() > 1e-2


@pytest.mark.parametrize("noise_only", [False, True])
def test_an_output_projection_is_in_the_graph(tmp_path, noise_only):
    """Back-projection steps after Synthesis (mgbp.models.output_projection): the graph's strided-convolution
    downscale and polyphase upscale give torch's projection, at W = 0 and W = 1, with dynamic sizes."""
    from mgbp.models.output_projection import OutputProjection

    model = random_tiny(output_projection=OutputProjection(steps=2, noise_only=noise_only))
    path = tmp_path / "projected.onnx"
    export_onnx(model, path, ExportOptions(), label="projected")
    session = onnx_session(path)
    plain = random_tiny()
    for batch, h, w in SIZES[1:]:
        for amp in (0.0, 1.0):
            image, noise_amp, noise = inputs(model, batch, h, w, amp)
            out = session.run(["output"], {"image": image.numpy(), "noise_amp": noise_amp.numpy(),
                                           "noise": noise.numpy()})[0]
            np.testing.assert_allclose(out, torch_output(model, image, noise_amp, noise), rtol=0, atol=1e-4)
            moved = np.abs(out - torch_output(plain, image, noise_amp, noise)).max()
            assert (moved < 1e-6) if (noise_only and amp == 0.0) else (moved > 1e-3)
