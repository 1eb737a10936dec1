"""Result tables of `mgbp eval` in the layout of the paper's Table II: text, Markdown, CSV and JSON; and the
atomic JSON / CSV / Markdown writers that the research tools (`mgbp sweep`, `consistency`, `linearscope`) share.

Table II of the paper lists, for each method (rows), PSNR-Y / SSIM-Y on each benchmark (columns). Here a row
is one (scale, method) pair and each dataset contributes a PSNR-Y and an SSIM-Y column, plus NIQE and RMSE
columns when they were measured. Per-image rows use the same metric columns. CSV is "long" (one line per
dataset, scale, method and, when asked, image) so spreadsheets and pandas read it directly; JSON holds
everything, per-image scores included. Files are written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from mgbp.errors import ConfigError
from mgbp.io import write_atomically


@dataclass(frozen=True)
class MetricColumn:
    key: str  # field name in the result records
    header: str
    digits: int


METRIC_COLUMNS = (
    MetricColumn("psnr_y", "PSNR-Y", 2),
    MetricColumn("ssim_y", "SSIM-Y", 4),
    MetricColumn("niqe", "NIQE", 4),
    MetricColumn("rmse", "RMSE", 2),
    MetricColumn("lpips", "LPIPS", 4),  # optional, through pyiqa (mgbp.metrics.learned)
    MetricColumn("dists", "DISTS", 4),
)
CSV_FIELDS = ("dataset", "scale", "method", "image", "count", "psnr_y", "ssim_y", "niqe", "rmse", "lpips", "dists")
MISSING = "-"


def measured_columns(records: Sequence[dict]) -> list[MetricColumn]:
    """PSNR-Y and SSIM-Y always; the others (NIQE, RMSE, LPIPS, DISTS) when any record has them."""
    return [c for c in METRIC_COLUMNS
            if c.key in ("psnr_y", "ssim_y") or any(r.get(c.key) is not None for r in records)]


def _format(value, digits: int) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _unique(values) -> list:
    return list(dict.fromkeys(values))


def summary_grid(summary: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the Table II layout: one row per (scale, method), metric columns per dataset."""
    columns = measured_columns(summary)
    datasets = _unique(r["dataset"] for r in summary)
    by_key = {(r["dataset"], r["scale"], r["method"]): r for r in summary}
    header = ["Scale", "Method"] + [f"{d} {c.header}" for d in datasets for c in columns]
    rows = []
    for scale in _unique(r["scale"] for r in summary):
        for method in _unique(r["method"] for r in summary):
            cells = [by_key.get((d, scale, method)) for d in datasets]
            if all(cell is None for cell in cells):
                continue  # e.g. a x4 model has no x2 row
            row = [f"x{scale}", method]
            for cell in cells:
                row += [_format(None if cell is None else cell.get(c.key), c.digits) for c in columns]
            rows.append(row)
    return header, rows


def image_grid(images: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-image table, grouped by dataset, scale and method (in first-seen order)."""
    columns = measured_columns(images)
    orders = {key: {v: k for k, v in enumerate(_unique(r[key] for r in images))}
              for key in ("dataset", "scale", "method")}
    images = sorted(images, key=lambda r: tuple(orders[key][r[key]] for key in ("dataset", "scale", "method")))
    header = ["Dataset", "Scale", "Method", "Image"] + [c.header for c in columns]
    rows = [[r["dataset"], f"x{r['scale']}", r["method"], r["image"]]
            + [_format(r.get(c.key), c.digits) for c in columns] for r in images]
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Fixed-width text: names left-aligned, numbers right-aligned."""
    widths = [max(len(str(v)) for v in column) for column in zip(header, *rows)]
    numeric = [all(_is_number(row[k]) for row in rows) and bool(rows) for k in range(len(header))]

    def line(cells):
        return "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    numeric = [all(_is_number(row[k]) for row in rows) and bool(rows) for k in range(len(header))]
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if n else "---" for n in numeric) + " |"]
    lines += ["| " + " | ".join(_escape_markdown(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _escape_markdown(cell: str) -> str:
    return cell.replace("|", "\\|")


def _is_number(text: str) -> bool:
    if text == MISSING:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------------------- documents


def markdown_document(results: dict, per_image: bool) -> str:
    """The summary table (and per-image tables on request) with a line that states the protocol."""
    settings = results["settings"]
    parts = [
        "# mgbp eval",
        "",
        f"Protocol: {results['protocol']}",
        "",
        f"Noise W = {settings['noise']}; images per dataset: "
        + ", ".join(f"{d} {n}" for d, n in results["image_counts"].items()) + ".",
        "",
        markdown_table(*summary_grid(results["summary"])),
    ]
    if per_image:
        parts += ["", "## Per image", "", markdown_table(*image_grid(results["images"]))]
    if results["skipped"]:
        parts += ["", "## Skipped", ""] + [f"- `{s['path']}`: {s['reason']}" for s in results["skipped"]]
    return "\n".join(parts) + "\n"


def csv_document(results: dict, per_image: bool) -> str:
    """Long CSV: a mean row per (dataset, scale, method) with an empty `image`, then per-image rows."""
    rows = [{**{k: row.get(k) for k in CSV_FIELDS if k in row}, "image": "", "count": row["count"]}
            for row in results["summary"]]
    if per_image:
        rows += [{**{k: row.get(k) for k in CSV_FIELDS if k in row}, "count": 1} for row in results["images"]]
    return csv_text(rows, CSV_FIELDS)


def csv_text(rows: Sequence[dict], fields: Sequence[str] | None = None) -> str:
    """CSV with a header line; columns `fields` (default: the keys of the first row), None as empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields if fields is not None else rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def json_document(results: dict) -> str:
    """Strict JSON: a non-finite score (PSNR of an exact output is +inf) becomes null."""
    return json.dumps(_finite_or_none(results), indent=2, allow_nan=False) + "\n"


def _finite_or_none(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def write_text(path, text: str):
    """Write a UTF-8 text file atomically."""
    return write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json(path, data):
    """Write `data` as strict JSON (non-finite numbers as null), atomically."""
    return write_text(path, json_document(data))


def write_csv(path, rows: Sequence[dict]):
    """Write rows of dicts as CSV (columns: the first row's keys), atomically."""
    if not rows:
        raise ConfigError(f"{path}: no rows to write")
    return write_text(path, csv_text(rows))
