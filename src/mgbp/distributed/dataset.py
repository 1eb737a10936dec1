"""The Python entry point of the Ray pipeline (`mgbp.distributed`) for a Ray Dataset you already hold:
`upscale_dataset` runs the images of its rows (bytes and path, e.g. `ray.data.read_binary_files`) through the
same actor pool as `mgbp upscale --ray`, each output named as `mgbp upscale -o FOLDER` names it
(`output_target`). An execution detail of the paper's inference (Algorithm 1 over archives of images), not an
equation of its own. Ray ships the row functions by reference to this module: workers import it.
"""

from __future__ import annotations

from dataclasses import replace

from mgbp.distributed import storage
from mgbp.distributed.cluster import import_ray
from mgbp.distributed.pipeline import READ_CPUS, upscale_rows
from mgbp.distributed.settings import ClusterOptions, ModelSpec, UpscaleSettings, first_line
from mgbp.errors import MgbpError


def upscale_dataset(dataset, output: str, spec: ModelSpec = ModelSpec(),
                    settings: UpscaleSettings = UpscaleSettings(), cluster: ClusterOptions = ClusterOptions(),
                    path_column: str = "path", bytes_column: str | None = "bytes", root: str | None = None,
                    ext: str = "auto", suffix: str = ""):
    """Upscale the images of a Ray Dataset you already hold, e.g.
    `ray.data.read_binary_files("s3://bucket/photos", include_paths=True)` (columns "bytes" and "path").

    Each row's output goes to `output` (a folder path or URI) under its path relative to `root` (default: its
    file name alone), named STEM + `suffix` + extension (`ext`: png, jpg or auto: the source's own where it
    can be written, else png), as `mgbp upscale -o FOLDER` names them. Returns a lazy Dataset with one row per
    image: "source", "target", "error" ("" when written) and "worker" (the actor's process id); iterate it or
    call `.materialize()` to run it. Existing outputs are replaced, unless `settings.skip_existing` (then they
    come back with error "skipped (existing)"). Connect first (`connect`), as for any Ray Dataset.
    """
    import_ray()
    cluster.check()
    from mgbp.inference import check_noise_amplitude

    check_noise_amplitude(settings.noise, settings.allow_extrapolation, name="noise")
    naming = {"output": output.rstrip("/"), "root": root, "ext": ext, "suffix": suffix,
              "path_column": path_column, "bytes_column": bytes_column, "skip_existing": settings.skip_existing}
    rows = dataset.map_batches(_dataset_rows, fn_kwargs={"naming": naming}, batch_size=1, num_cpus=READ_CPUS)
    return upscale_rows(rows, spec, replace(settings, overwrite=True), cluster).map_batches(
        _dataset_results, batch_size=None, num_cpus=READ_CPUS)


def output_target(source: str, output: str, root: str | None = None, ext: str = "auto", suffix: str = "") -> str:
    """Where `upscale_dataset` writes `source`'s output (see there)."""
    import posixpath

    from mgbp.io import WRITE_EXTENSIONS

    ext = ext.lower().lstrip(".")
    own = posixpath.splitext(source)[1].lower()
    extension = "." + ext if ext != "auto" else (own if own in WRITE_EXTENSIONS else ".png")
    relative = posixpath.basename(source) if root is None else posixpath.relpath(source, root.rstrip("/"))
    return f"{output}/{posixpath.splitext(relative)[0]}{suffix}{extension}"


def _dataset_rows(batch: dict, naming: dict) -> dict:
    """Ray Data task: a user's rows (path[, bytes]) -> job rows with their bytes and targets."""
    sources = [str(p) for p in batch[naming["path_column"]]]
    column = naming["bytes_column"]
    out = {"number": list(range(len(sources))), "kind": ["image"] * len(sources), "source": sources,
           "target": [], "segment": [-1] * len(sources), "task": [b""] * len(sources), "data": [], "error": []}
    for k, source in enumerate(sources):
        target = output_target(source, naming["output"], naming["root"], naming["ext"], naming["suffix"])
        error, data = "", b""
        if naming["skip_existing"] and storage.exists(target):
            error = "skipped (existing)"
        else:
            try:
                data = bytes(batch[column][k]) if column and column in batch else storage.read_bytes(source)
            except (MgbpError, OSError) as exc:
                error = first_line(exc)
        out["target"].append(target)
        out["data"].append(data)
        out["error"].append(error)
    return out


def _dataset_results(batch: dict) -> dict:
    return {"source": batch["source"], "target": batch["target"], "error": batch["error"],
            "worker": batch["worker"]}
