"""Files of `mgbp upscale --ray` (`mgbp.distributed`), for the planning process and the workers alike: local
paths (on a cluster: a filesystem every node mounts, e.g. NFS) or, for images, URIs such as `s3://bucket/key`
that pyarrow.fs opens; image bytes decoded as `mgbp upscale` reads a file; outputs written atomically, as
`mgbp upscale` writes them (`mgbp.atomic`: a temporary name, then a rename; a URI: one upload of the finished
file); and the temporaries of killed attempts swept. An execution detail of the paper's inference (Algorithm 1
over archives of images), not an equation of its own.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from mgbp.distributed.settings import UpscaleSettings, first_line
from mgbp.errors import MgbpError


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _filesystem(uri: str):
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, OSError) as exc:
        raise MgbpError(f"{uri}: {first_line(exc)}") from None


def exists(target) -> bool:
    text = str(target)
    if not is_uri(text):
        return Path(text).exists()
    import pyarrow.fs

    filesystem, path = _filesystem(text)
    return filesystem.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def read_bytes(source: str) -> bytes:
    if is_uri(source):
        filesystem, path = _filesystem(source)
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    path = Path(source.removeprefix("file://"))
    if not path.is_file():
        from mgbp.io import read_image

        read_image(path)  # raises the single-process reader's error (no such file / not a file)
    return path.read_bytes()


def decode(data: bytes, source: str, model, settings: UpscaleSettings):
    """(planes (1, C, H, W), LoadedImage) of an image file's bytes, read as `mgbp upscale` reads a file
    (`mgbp.image_files.read_source`: memory checked from the header first; errors name `source`)."""
    from mgbp.errors import ImageReadError
    from mgbp.image_files import image_planes, read_source

    with tempfile.TemporaryDirectory(prefix="mgbp-") as folder:
        local = Path(folder) / Path(source.rstrip("/")).name
        local.write_bytes(data)
        try:
            loaded = read_source(local, int(model.scale), settings.output(), settings.max_memory,
                                 warn=lambda message: print(f"mgbp upscale: warning: {message}".replace(
                                     str(local), source), file=sys.stderr))
        except MgbpError as exc:
            kind = ImageReadError if isinstance(exc, ImageReadError) else MgbpError
            raise kind(str(exc).replace(str(local), source)) from None
    return image_planes(loaded), loaded


def write(target: str, out, loaded, model, settings: UpscaleSettings) -> None:
    """Write an upscaled (1, C, H, W) as `mgbp upscale` does (`mgbp.image_files.write_planes`: the output size,
    format, bit depth, alpha, ICC and EXIF; atomically; for a URI, a local file then one upload)."""
    from mgbp.image_files import write_planes

    if not is_uri(target):
        write_planes(Path(target.removeprefix("file://")), out, loaded, settings.output(), int(model.scale))
        return
    with tempfile.TemporaryDirectory(prefix="mgbp-") as folder:
        local = write_planes(Path(folder) / ("out" + Path(target).suffix), out, loaded, settings.output(),
                             int(model.scale))
        filesystem, path = _filesystem(target)
        with filesystem.open_output_stream(path) as stream:  # an object store shows the object whole or not
            stream.write(local.read_bytes())


def sweep_temporaries(targets: Iterable) -> None:
    """Remove the `.NAME.tmp-*` files (`mgbp.atomic`) that killed attempts left beside these local outputs."""
    import fnmatch
    import glob

    folders: dict[Path, list[str]] = {}
    for target in targets:
        text = str(target)
        if is_uri(text):
            continue
        path = Path(os.path.abspath(text))
        folders.setdefault(path.parent, []).append(glob.escape(f".{path.stem}.tmp-") + "*" +
                                                   glob.escape(path.suffix))
    for folder, patterns in folders.items():
        if not folder.is_dir():
            continue
        for leftover in folder.iterdir():
            if leftover.is_file() and any(fnmatch.fnmatchcase(leftover.name, p) for p in patterns):
                leftover.unlink(missing_ok=True)


def absolute(path) -> str:
    """A path as the workers see it: local ones made absolute (a worker's folder is not this one's)."""
    return str(path) if is_uri(str(path)) else os.path.abspath(path)
