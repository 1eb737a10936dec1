"""`mgbp upscale` on a Ray cluster: the generator's forward pass (Algorithm 1, tiled exactly by `mgbp.tiling`)
over archives of images and long videos (the paper's "Video Inference", Section IV, Fig. 6), on many machines.

A Ray Data pipeline (https://docs.ray.io/en/latest/data/) does the work; this process plans it and reports:

    jobs (source, target) --from_items--> read (Ray tasks: the file's bytes, from any filesystem pyarrow
    understands) --> upscale (an actor pool: each actor loads the model once, from the same spec as the
    command; same-size images of a batch go through the network together at W = 0; outputs are written by the
    actor, atomically) --> one result row per job --> the same report and summary as one process.

Images come out byte-identical to `mgbp upscale` without `--ray` on the same kind of device (same reader,
tiling, rounding and writer; on CPU each tile's forward pass is the same computation whatever the batch).
Long videos are cut at keyframes into time segments (`mgbp.video_segments`) that run as rows of the same
pipeline; each segment reads the context frames its windows need, so the joined frames equal the single pass;
this process then joins each video's segments (packets copied, not re-encoded) with the source's audio.

Faults: Ray Data restarts an actor whose process dies and retries its tasks (its defaults for actor pools:
`max_restarts=-1`, `max_task_retries=-1`). Every output is written under a temporary name and renamed, so a
retried job never leaves a half-written file; temporaries of killed attempts are swept at the end. A rerun with
`skip_existing` finishes an interrupted job: finished images are skipped, finished video segments reused.

Inputs and outputs: local paths (on a cluster: a filesystem every node mounts, e.g. NFS) or, for images, URIs
such as `s3://bucket/key` or `gs://...` that pyarrow.fs opens when the library and credentials are present on
every node. Videos and frame folders need paths (PyAV opens files).

The modules, each an execution detail of that inference rather than an equation of its own:

- `settings`: the contracts (`JobLike`, `ModelSpec`, `UpscaleSettings`, `ClusterOptions`, `JobResult`,
  `Outcome`);
- `cluster`: joining or starting Ray (`import_ray`, `connect`), a wrong address refused before any work;
- `storage`: local paths and URIs, image bytes in, outputs written atomically, temporaries swept;
- `pipeline`: planning the rows (images, videos, video segments), running the Ray Data pipeline, joining
  videos and reporting (`run_jobs`, `iter_results`);
- `workers`: what runs on the workers (the read tasks and the `Upscaler` actor);
- `dataset`: `upscale_dataset` for a Ray Dataset you already hold (`output_target` names its outputs).
"""

from mgbp.distributed.cluster import connect, import_ray
from mgbp.distributed.dataset import output_target, upscale_dataset
from mgbp.distributed.pipeline import iter_results, run_jobs
from mgbp.distributed.settings import ClusterOptions, JobLike, JobResult, ModelSpec, Outcome, UpscaleSettings
from mgbp.distributed.workers import Upscaler, read_sources

__all__ = [
    "ClusterOptions",
    "JobLike",
    "JobResult",
    "ModelSpec",
    "Outcome",
    "UpscaleSettings",
    "Upscaler",
    "connect",
    "import_ray",
    "iter_results",
    "output_target",
    "read_sources",
    "run_jobs",
    "upscale_dataset",
]
