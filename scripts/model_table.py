"""The README's table of shipped models, generated from the metadata inside the weight files.

    python scripts/model_table.py            # print the Markdown
    python scripts/model_table.py --readme   # rewrite README.md between the "models:begin/end" markers

Nothing in the table is typed by hand: every figure is read from the `measured` and `training` records that
`scripts/ship_model.py` wrote into each file.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from safetensors import safe_open

from mgbp.models.weights import SHIPPED, read_metadata

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- models:begin -->", "<!-- models:end -->"


def parameter_count(path: Path) -> int:
    with safe_open(str(path), "pt") as handle:
        return sum(_product(handle.get_slice(k).get_shape()) for k in handle.keys())  # noqa: SIM118 (not iterable)


def _product(shape) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def describe_training(meta: dict) -> str:
    parts = []
    for stage in meta.get("training", []):
        wall = stage.get("wall_s") or 0
        parts.append(f"{stage['mode']} {stage['steps']} steps ({wall / 60:.0f} min, {stage['device']})")
    return "; ".join(parts)


def model_rows(name: str, meta: dict) -> list[str]:
    cfg, measured = meta["config"], meta["measured"]
    size_mb = SHIPPED[name].path.stat().st_size / 1e6
    fid = measured["fidelity_w0"]
    sweep = measured["sweep_set14"]
    arch = (f"MGBPv2 L{cfg['levels']} mu{cfg['mu']} {'-'.join(map(str, cfg['channels']))}"
            if meta["family"] in ("mgbpv2", "mgbp3d") else meta["family"])
    arch += f", {parameter_count(SHIPPED[name].path):,} params"
    niqe = " / ".join(f"{v:.2f}" for v in sweep["niqe"])
    rmse = " / ".join(f"{v:.2f}" for v in sweep["rmse"])
    return [
        (f"| `{name}` | x{meta['scale']} | {arch} | {size_mb:.2f} MB | "
        f"{fid['Set5/model']['psnr_y']:.2f} / {fid['Set5/model']['ssim_y']:.4f} | "
        f"{fid['Set14/model']['psnr_y']:.2f} / {fid['Set14/model']['ssim_y']:.4f} | "
        f"{niqe} | {rmse} | {describe_training(meta)} |")
    ]


def video_rows(name: str, meta: dict) -> list[str]:
    """One row per method of the Vid4-city measurement: bicubic, the image model per frame, this model."""
    cfg, clip = meta["config"], meta["measured"]["video"]["vid4_city"]
    arch = (f"MGBP-3D L{cfg['levels']} mu{cfg['mu']} {'-'.join(map(str, cfg['channels']))}, "
            f"{parameter_count(SHIPPED[name].path):,} params, clips of {cfg.get('frames')}")
    size_mb = SHIPPED[name].path.stat().st_size / 1e6
    rows = []
    for m in clip["methods"]:
        label = f"`{name}`" if m["method"] == "model" else m["method"]
        mode = m["mode"]
        detail = f"{arch} | {size_mb:.2f} MB" if m["method"] == "model" else "- | -"
        training = describe_training(meta) if m["method"] == "model" else ""
        rows.append(f"| {label} | x{meta['scale']} | {mode} | {detail} | {m['psnr_y']:.2f} / {m['ssim_y']:.4f} | "
                    f"{m['flicker']:.3f} | {training} |")
    return rows


def add_models(lines: list[str], names: list[str], rows) -> tuple[list[str], set[str]]:
    """Append each model's `rows(name, metadata)`; return the commands and machines that measured them."""
    commands, machines = [], set()
    for name in names:
        meta = read_metadata(SHIPPED[name].path)
        lines += rows(name, meta)
        commands += [c.replace("WEIGHTS", name) for c in meta["measured"]["commands"]]
        machines.add(meta["measured"]["machine"])
    return commands, machines


def image_table(names: list[str]) -> tuple[list[str], list[str], set[str]]:
    lines = [
        ("| name | scale | architecture | file | Set5 PSNR-Y / SSIM-Y (W=0) | Set14 PSNR-Y / SSIM-Y (W=0) | "
        "Set14 NIQE at W = 0 / .25 / .5 / .75 / 1 | Set14 RMSE at the same W | training |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    commands, machines = add_models(lines, names, model_rows)
    for scale in sorted({SHIPPED[n].scale for n in names}):
        name = next(n for n in names if SHIPPED[n].scale == scale)
        bicubic = read_metadata(SHIPPED[name].path)["measured"]["fidelity_w0"]
        lines.append(f"| bicubic | x{scale} | MATLAB imresize | - | {bicubic['Set5/bicubic']['psnr_y']:.2f} / "
                     f"{bicubic['Set5/bicubic']['ssim_y']:.4f} | {bicubic['Set14/bicubic']['psnr_y']:.2f} / "
                     f"{bicubic['Set14/bicubic']['ssim_y']:.4f} | | | |")
    return lines, commands, machines


def video_table(names: list[str]) -> tuple[list[str], list[str], set[str]]:
    first = read_metadata(SHIPPED[names[0]].path)["measured"]["video"]["vid4_city"]
    lines = [
        (f"Video models on Vid4-city ({first['frames']} frames, {first['hr_size'][1]}x{first['hr_size'][0]}), "
         "frame-averaged; each file's `training_data` says what it saw:"),
        "",
        ("| name | scale | mode | architecture | file | PSNR-Y / SSIM-Y | flicker (mean abs. error of dY/dt) | "
         "training |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    commands, machines = add_models(lines, names, video_rows)
    return lines, commands, machines


def table() -> str:
    if not SHIPPED:
        return "No shipped weights yet."
    images = [n for n, e in SHIPPED.items() if not e.video]
    videos = [n for n, e in SHIPPED.items() if e.video]
    lines, commands, machines = image_table(images) if images else ([], [], set())
    if videos:
        more_lines, more_commands, more_machines = video_table(videos)
        lines += [""] + more_lines if lines else more_lines
        commands, machines = commands + more_commands, machines | more_machines
    lines += ["", "Measured with (OUT is a scratch folder):", ""]
    lines += [f"    {c}" for c in dict.fromkeys(commands)]
    lines += ["", "Machine: " + "; ".join(sorted(machines)) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help="rewrite the table in README.md")
    args = parser.parse_args()
    text = table()
    if not args.readme:
        print(text)
        return
    readme = ROOT / "README.md"
    content = readme.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(content):
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block")
    readme.write_text(pattern.sub(lambda _: f"{BEGIN}\n{text}\n{END}", content))
    print("README.md model table updated")


if __name__ == "__main__":
    main()
