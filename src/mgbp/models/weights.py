"""Weight files: save and load the generators of Algorithm 1 (MGBPv2, MGBP-3D) and Figure 3 (MGBPv1).

Our format is safetensors (no code runs when a file is read) whose string metadata holds everything needed
to rebuild the network from the file alone:
    format = "mgbp", format_version = "1", family ("mgbpv2" | "mgbp3d" | "mgbpv1"), preset, scale,
    noise_channels, is_video, config (JSON of the config dataclass), plus any extra keys given to
    `save_model` (e.g. training = the recipe, metrics = measured PSNR), each stored as JSON.
Weights may be stored in float16; `load_model` returns float32 unless a dtype is asked for.

`load_model` also reads the authors' PIRM-2018 `.model` files (plain pickled state dicts, read with
`torch.load(weights_only=True)`, so no pickled code can run); they are recognised by their keys
(`mgbp.models.mgbpv1.is_authors_state_dict`) and rebuilt as MGBPv1.

`SHIPPED` names weight files inside the package folder `mgbp/weights/`. Adding trained weights is one line:
    "mgbp-x4": Shipped("mgbp-x4.safetensors", scale=4, sha256="...", description="..."),
Entries are in order of preference: `default_model_for_scale(f)` returns the first image model of scale f,
`default_model_for_scale(f, video=True)` the first video model (else the image one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

import torch
from torch import nn

from mgbp.atomic import atomic_path
from mgbp.errors import MgbpError, WeightFileError

FORMAT_NAME = "mgbp"
FORMAT_VERSION = "1"
RESERVED_KEYS = (
    "format",
    "format_version",
    "family",
    "preset",
    "scale",
    "noise_channels",
    "is_video",
    "config",
)
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


@dataclasses.dataclass(frozen=True)
class Shipped:
    filename: str  # inside mgbp/weights/
    scale: int
    sha256: str = ""  # checked on load when given
    description: str = ""
    video: bool = False  # an MGBP-3D model: the default for video inputs of its scale, never for images

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.filename


DEFAULT_SCALE = 4  # what `mgbp upscale` and `mgbp.upscale` use when given neither a scale nor a model

SHIPPED: dict[str, Shipped] = {
    "mgbp-x4": Shipped(
        "mgbp-x4.safetensors",
        scale=4,
        sha256="e264397ff94a4f15de1493e2b17e03a50a61b26c0c262cdc6617e007c46071c8",
        description="default x4: MGBPv2 L3 mu2 64-32-16 (261 k params), fidelity at W=0, perceptual at W=1 with "
        "the texture-statistics term; trained on a 2-core CPU (configs/cpu-x4.yaml, cpu-x4-restart.yaml, "
        "cpu-x4-perceptual-restart.yaml, then cpu-x4-perceptual-texture.yaml and cpu-x4-perceptual-texture2.yaml); "
        "at W > 0 its noise is shaped by the input's texture and its output ends with one back-projection step "
        "(mgbp convert --noise-mask 2,10,0.5,1.25 --output-projection 1,noise; W = 0 unchanged)",
    ),
    "mgbp-x4-large": Shipped(
        "mgbp-x4-large.safetensors",
        scale=4,
        sha256="fb07b0d983f0fa3f857c08c6c4f92ac032f9ccd3538c7e3845c45d79549ea083",
        description="x4, larger and slower than the default (-m mgbp-x4-large): mgbp-x4 grown to mu 3, then mu 4 "
        "(MGBPv2 L3 mu4 64-32-16, 957 k params) with mgbp convert --mu, each growth trained for fidelity on a "
        "2-core CPU (configs/cpu-x4-large.yaml, configs/cpu-x4-large-mu4.yaml); its W > 0 output comes from the "
        "default's perceptual stages, not trained further (less texture at W=1 than mgbp-x4)",
    ),
    "mgbp-x2": Shipped(
        "mgbp-x2.safetensors",
        scale=2,
        sha256="c760e08b9ccefadf3bb635e7df665e33b8d4da60e7529dbe8c1bda3a82dce0b4",
        description="x2: MGBPv2 L3 mu3 64-32-16 (554 k params), fidelity only; trained on a 2-core CPU "
        "(configs/cpu-x2.yaml, then configs/cpu-x2-bf16.yaml in bf16 autocast), then grown to mu 3 (mgbp convert "
        "--mu 3) and trained on an H200 by scripts/gpu_session.sh (configs/gpu-x2.yaml, two stages); ends with one "
        "back-projection step onto its input (mgbp convert --output-projection 1)",
    ),
    "mgbp-x3": Shipped(
        "mgbp-x3.safetensors",
        scale=3,
        sha256="44bbcccf47c35e5c0ee31a22fa1014a7614f9b487d2813c5ea61b0739f486125",
        description="x3: MGBPv2 L3 mu4 64-32-16 (957 k params), fidelity only, started from mgbp-x4; trained on "
        "a 2-core CPU (configs/cpu-x3.yaml, then configs/cpu-x3-bf16.yaml in bf16 autocast, then grown from mu 2 "
        "to mu 3 with mgbp convert --mu 3 and trained on: configs/cpu-x3-mu3.yaml, then grown to mu 4 the same "
        "way: configs/cpu-x3-mu4.yaml), then trained through one back-projection step at its end "
        "(configs/cpu-x3-projection.yaml, then a cosine restart: configs/cpu-x3-projection2.yaml)",
    ),
    "mgbp-x8": Shipped(
        "mgbp-x8.safetensors",
        scale=8,
        sha256="47b6e5e0c76d661227cb7953a3995b421c0e71c7f76563aa449c5158af5752db",
        description="x8: MGBPv2 L4 mu2 64-32-16-8 (557 k params), fidelity only; trained on a 2-core CPU "
        "(configs/cpu-x8.yaml)",
    ),
    "mgbp-x16": Shipped(
        "mgbp-x16.safetensors",
        scale=16,
        sha256="d6606c2010a38c514258f035812b4c62314ad947c2dc0a404d61366df0374e59",
        description="x16: MGBPv2 L4 mu2 64-32-16-8 (557 k params), fidelity only, started from mgbp-x8; trained "
        "on a 2-core CPU (configs/cpu-x16.yaml)",
    ),
    "mgbp-x4-real": Shipped(
        "mgbp-x4-real.safetensors",
        scale=4,
        sha256="21289f1b9e52fe047d24a3a40e2b4e970146b1de6bf6bc41733a695bb2a4bf31",
        description="x4 for real photos (JPEG, noise, blur, unknown resizing): the mgbp-x4 network fine-tuned on "
        "Real-ESRGAN's second-order degradations (mgbp.degradations), then its perceptual stage: W=0 restores, "
        "W=1 adds texture; trained on a 2-core CPU (configs/cpu-x4-real.yaml, configs/cpu-x4-real-perceptual.yaml)",
    ),
    "mgbp-x4-video": Shipped(
        "mgbp-x4-video.safetensors",
        scale=4,
        sha256="729b54ddef87eca0901875031fe8debdf89ff4488584610b446f1b63ae1a7d26",
        description="x4 video: MGBP-3D L3 mu2 64-32-16 (801 k params), clips of 5 frames; the image model "
        "inflated to 3D, then trained on panned stills and Big Buck Bunny on a 2-core CPU "
        "(configs/cpu-x4-video.yaml, then two warm restarts: configs/cpu-x4-video-restart*.yaml)",
        video=True,
    ),
}


def default_model_for_scale(scale: int, video: bool = False) -> str:
    """Name of the preferred shipped weights for factor `scale`; WeightFileError when there are none.

    Images get the first image model of that scale; videos (`video=True`) the first video model, else the
    first image model (run frame by frame).
    """
    fitting = [name for name, entry in SHIPPED.items() if entry.scale == int(scale) and (video or not entry.video)]
    fitting.sort(key=lambda name: not SHIPPED[name].video if video else False)  # stable: keeps SHIPPED's order
    if fitting:
        return fitting[0]
    available = ", ".join(f"{n} (x{e.scale}{', video' if e.video else ''})" for n, e in SHIPPED.items()) or "none yet"
    raise WeightFileError(f"no shipped weights for scale x{scale} (shipped: {available}); pass a weight file")


# --------------------------------------------------------------------------------------------------------
# Saving.


def _atomic_write(path: Path, write) -> None:
    """Write through `write(temporary_path)`, then rename into place (never a half-written file)."""
    with atomic_path(path) as temporary:
        write(str(temporary))


def model_metadata(model: nn.Module, extra_metadata: dict | None = None) -> dict[str, str]:
    """The string->string metadata that lets `load_model` rebuild `model`."""
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "family": model.family,
        "preset": str(model.preset or ""),
        "scale": str(int(model.scale)),
        "noise_channels": str(int(model.noise_channels)),
        "is_video": json.dumps(bool(model.is_video)),
        "config": json.dumps(dataclasses.asdict(model.config), sort_keys=True),
    }
    for key, value in (extra_metadata or {}).items():
        if key in RESERVED_KEYS:
            raise WeightFileError(f"extra metadata key {key!r} is reserved ({', '.join(RESERVED_KEYS)})")
        metadata[str(key)] = json.dumps(value, sort_keys=True, default=str)
    return metadata


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    extra_metadata: dict | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write `model` as safetensors with its config in the metadata (atomically). dtype: e.g. float16."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous()
    metadata = model_metadata(model, extra_metadata)
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


# --------------------------------------------------------------------------------------------------------
# Loading.


def _resolve(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    name = str(name_or_path)
    if name in SHIPPED:
        entry = SHIPPED[name]
        if not entry.path.is_file():
            raise WeightFileError(f"shipped weights {name!r} are missing from the package ({entry.path})")
        if entry.sha256 and _sha256(entry.path) != entry.sha256:
            raise WeightFileError(
                f"shipped weights {name!r} are corrupt: sha256 does not match ({entry.path})"
            )
        return entry.path
    if path.exists():
        raise WeightFileError(f"{path} is not a file")
    shipped = ", ".join(SHIPPED) or "none yet"
    raise WeightFileError(f"no weight file {name!r} and no shipped weights of that name (shipped: {shipped})")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else text or type(exc).__name__


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors: 8-byte little-endian header length, then a JSON header starting with '{'."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not iterable
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for malformed files
        raise WeightFileError(f"{path}: not a readable safetensors file ({_one_line(exc)})") from None
    return tensors, metadata


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling/zip/EOF errors of any kind mean "not a state dict"
        raise WeightFileError(
            f"{path}: neither safetensors nor a PyTorch state dict that loads without running pickled code "
            f"({unpickler_reason(exc)})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightFileError(f"{path}: the file holds a {type(state).__name__}, not a state dict of tensors")
    return state


def unpickler_reason(exc: BaseException) -> str:
    """The specific reason inside torch's long weights_only refusal, on one line, never its advice to load the
    file with the protection off (which would let a hostile file run code)."""
    text = str(exc)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", text, flags=re.DOTALL)
    if found:
        return _one_line(found.group(1))
    paragraphs = [part for part in re.split(r"\n\s*\n", text) if part.strip()]
    kept = [part for part in paragraphs if "weights_only" not in part and "Weights only load failed" not in part]
    if kept:
        return _one_line(kept[0])
    return "it holds Python objects besides tensors, which could run code when loaded"


def _describe_keys(keys, limit: int = 3) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Raise a one-line WeightFileError naming the keys/shapes that do not match `model`."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    wrong = [k for k in expected.keys() & state.keys() if tuple(state[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"missing {_describe_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected {_describe_keys(unexpected)}")
    if wrong:
        k = min(wrong)
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        problems.append(
            f"shape of {k} is {tuple(state[k].shape)} in the file, {expected[k]} in the model{more}"
        )
    if problems:
        raise WeightFileError(
            f"{where} does not match its {model.family} architecture: {'; '.join(problems)}"
        )


def _parse_json(metadata: dict[str, str], key: str, path: Path):
    try:
        return json.loads(metadata[key])
    except (KeyError, json.JSONDecodeError) as exc:
        raise WeightFileError(f"{path}: metadata {key!r} is missing or not JSON ({_one_line(exc)})") from None


def check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse weights holding NaN or infinite values (a diverged training, a damaged file): every output of such
    a network would be NaN, written as black pixels."""
    bad = [key for key, tensor in state.items() if tensor.is_floating_point() and not bool(tensor.isfinite().all())]
    if bad:
        raise WeightFileError(f"{where}: weights hold NaN/Inf values ({_describe_keys(bad)}); the file is "
                              f"damaged or comes from a diverged training")


def _build_from_metadata(metadata: dict[str, str], path: Path, state: dict[str, torch.Tensor]) -> nn.Module:
    """The network the metadata describes, after checking on a weightless ("meta") copy that the file's tensor
    shapes are those of that network: a config claiming huge channels fails here, before any allocation."""
    family = metadata.get("family")
    config = _parse_json(metadata, "config", path)
    if not isinstance(config, dict):
        raise WeightFileError(f"{path}: metadata 'config' is not a JSON object")
    with torch.device("meta"):
        skeleton = _construct(family, config, path)
    check_state_dict(skeleton, state, str(path))
    return _construct(family, config, path)


def _construct(family, config: dict, path: Path) -> nn.Module:
    from mgbp.models.families import get_family

    builder = get_family(family, f"{path}: metadata")
    try:
        model = builder.build(config)
    except WeightFileError:
        raise
    except (MgbpError, TypeError, ValueError) as exc:
        raise WeightFileError(
            f"{path}: config metadata does not describe a valid {family} ({_one_line(exc)})"
        ) from None
    if model.family != family:
        raise WeightFileError(
            f"{path}: metadata says family {family!r} but its config builds {model.family!r}"
        )
    return model


def _foreign_model(state: dict[str, torch.Tensor], path: Path) -> nn.Module | None:
    """The network of the family that recognises `state` by its keys (the authors' MGBPv1 `.model` files), or
    None when none does."""
    from mgbp.models.families import FAMILIES

    for family in FAMILIES.values():
        if family.recognises is None or not family.recognises(state):
            continue
        try:
            return family.from_state_dict(state)
        except WeightFileError:
            raise
        except (MgbpError, RuntimeError, ValueError) as exc:
            raise WeightFileError(f"{path}: looks like {family.description} weights but {_one_line(exc)}") from None
    return None


def load_model(
    name_or_path: str | os.PathLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Rebuild a generator from a weight file (ours or the authors' `.model`) or a shipped name; eval mode.

    The returned model carries `metadata` (the file's metadata, JSON values decoded) and `preset`.
    Floating-point weights come back as float32 unless `dtype` is given.
    """
    path = _resolve(name_or_path)
    metadata: dict[str, str] = {}
    if _looks_like_safetensors(path):
        state, metadata = _read_safetensors(path)
    else:
        state = _read_torch(path)

    check_finite(state, str(path))
    if metadata.get("format") == FORMAT_NAME:
        model = _build_from_metadata(metadata, path, state)
        model.load_state_dict(state, strict=True)
    else:
        model = _foreign_model(state, path)
        if model is None:
            raise WeightFileError(
                f"{path}: no mgbp metadata and its keys match no known network (keys: {_describe_keys(state)})"
            )
    model.metadata = _decoded(metadata)
    model.preset = model.metadata.get("preset") or model.preset
    target = dtype if dtype is not None else torch.float32
    return model.to(device=device, dtype=target).eval()


def read_metadata(path: str | os.PathLike) -> dict:
    """The JSON-decoded metadata of one of our safetensors files (config, recipe, measured figures)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return _decoded(handle.metadata() or {})


def _decoded(metadata: dict[str, str]) -> dict:
    decoded = {}
    for key, value in metadata.items():
        try:
            decoded[key] = json.loads(value)
        except json.JSONDecodeError:
            decoded[key] = value
    return decoded
