"""What runs on the Ray workers of `mgbp upscale --ray` (`mgbp.distributed`): the read tasks (each image's
bytes) and the `Upscaler` actor, which loads the model once and upscales its rows with the generator's forward
pass (Algorithm 1, tiled exactly by `mgbp.tiling`; videos and their time segments as in the paper's "Video
Inference", Section IV, Fig. 6), writing each output itself. An execution detail of the paper's inference, not
an equation of its own. Ray ships these by reference to this module: workers import it.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from mgbp.distributed import storage
from mgbp.distributed.settings import ModelSpec, UpscaleSettings, first_line
from mgbp.errors import MgbpError


def read_sources(batch: dict) -> dict:
    """Ray Data task: the bytes of each image row's source ("data"), or the reason it cannot be read
    ("error"); video rows pass through (their workers open the files)."""
    data, errors = [], []
    for kind, source in zip(batch["kind"], batch["source"]):
        payload, error = b"", ""
        if kind == "image":
            try:
                payload = storage.read_bytes(str(source))
            except (MgbpError, OSError) as exc:
                error = first_line(exc)
        data.append(payload)
        errors.append(error)
    return {**batch, "data": data, "error": errors}


class Upscaler:
    """Ray Data actor: the model, loaded once; upscales the rows of each batch and writes their outputs."""

    def __init__(self, spec: ModelSpec, settings: UpscaleSettings):
        self.model, self.settings, self.pid = spec.load(), settings, os.getpid()

    def __call__(self, batch: dict) -> dict:
        count = len(batch["number"])
        errors = [str(e) for e in batch["error"]]
        images = [i for i in range(count) if batch["kind"][i] == "image" and not errors[i]]
        for i, error in self._images(images, batch).items():
            errors[i] = error
        for i in range(count):
            if batch["kind"][i] != "image":
                errors[i] = self._video(batch, i)
        return {"number": batch["number"], "kind": batch["kind"], "segment": batch["segment"],
                "source": batch["source"], "target": batch["target"], "error": errors,
                "worker": [self.pid] * count}

    def _video(self, batch: dict, i: int) -> str:
        from mgbp.video import upscale_video

        options = self.settings.video_options()
        try:
            if batch["kind"][i] == "segment":
                from mgbp.video_segments import upscale_segment

                upscale_segment(pickle.loads(batch["task"][i]), self.model, options)
            else:
                upscale_video(Path(str(batch["source"][i])), Path(str(batch["target"][i])), self.model, options,
                              to_frames=self.settings.to_frames)
        except BaseException as exc:  # noqa: BLE001 - sorted by _failure_line: reported, or raised again
            return _failure_line(exc)
        return ""

    def _images(self, positions: list[int], batch: dict) -> dict[int, str]:
        """Decode, group same-size images (W = 0: nothing random, a batch is the same computation), upscale,
        write. Returns the error line of each position ("" when written)."""
        errors, loaded = {}, {}
        for i in positions:
            try:
                loaded[i] = storage.decode(batch["data"][i], str(batch["source"][i]), self.model,
                                           self.settings)
            except BaseException as exc:  # noqa: BLE001
                errors[i] = _failure_line(exc)
        groups: dict[tuple, list[int]] = {}
        batchable = self.settings.noise == 0 and not self.settings.consistent
        for i, (image, _) in loaded.items():
            key = tuple(image.shape) if batchable else (i,)
            groups.setdefault(key, []).append(i)
        for group in groups.values():
            try:
                outs = self._upscale([loaded[i][0] for i in group])
            except BaseException as exc:  # noqa: BLE001
                if len(group) == 1:
                    errors[group[0]] = _failure_line(exc)
                    continue
                outs = None
            for k, i in enumerate(group):
                try:
                    out = outs[k:k + 1] if outs is not None else self._upscale([loaded[i][0]])
                    storage.write(str(batch["target"][i]), out, loaded[i][1], self.model, self.settings)
                    errors[i] = ""
                except BaseException as exc:  # noqa: BLE001
                    errors[i] = _failure_line(exc)
        return errors

    def _upscale(self, planes: list):
        """`mgbp upscale`'s upscaling (`mgbp.image_files.upscale_planes`), on one image or a stack of same-size
        ones."""
        import torch

        from mgbp.image_files import upscale_planes

        return upscale_planes(self.model, torch.cat(planes), self.settings.inference())


def _failure_line(exc: BaseException) -> str:
    """The report line of a job that failed, as the single-process loop words it; other errors propagate."""
    if isinstance(exc, (MgbpError, OSError)):
        return first_line(exc)
    text = str(exc)
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and (
            "can't allocate memory" in text or "DefaultCPUAllocator" in text)):
        return (f"not enough memory ({type(exc).__name__}); try a smaller --tile, or a machine with more "
                "memory")
    raise exc
