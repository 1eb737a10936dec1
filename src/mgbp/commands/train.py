"""`mgbp train CONFIG.yaml [key=value ...] [--resume]`: the command line of the learning strategies of
Section IV (eqs. 9-14; the training itself is `mgbp.train.Trainer`): the YAML config and its overrides in
(`mgbp.train_config`), log lines ("mgbp train: ...") on stderr (rank 0 only; warnings only with `--quiet`), and
a scheduler's SIGTERM turned into Ctrl-C, so that the run saves `last.pt` for `--resume`. `python -m mgbp.train ...` (and
`torchrun ... -m mgbp.train ...`) runs this same command through `mgbp.cli`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from mgbp.allocator import reuse_unless_opted_out
from mgbp.train import Trainer
from mgbp.train_config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML training config (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override config values, e.g. steps=5000 data.batch=32 optim.lr=2e-4")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt exactly")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _setup_logging(quiet: bool) -> None:
    rank = int(os.environ.get("RANK", "0"))
    logger = logging.getLogger("mgbp")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("mgbp train: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if (quiet or rank != 0) else logging.INFO)


def run(args: argparse.Namespace) -> int:
    _setup_logging(getattr(args, "quiet", False))
    cfg = load_config(args.config, args.overrides)
    reuse_unless_opted_out()  # each step's large buffers reused, not faulted in again (mgbp.allocator)

    def on_sigterm(signum, frame):  # a scheduler's SIGTERM saves like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm) if _in_main_thread() else None
    trainer = None
    try:
        trainer = Trainer(cfg, resume=args.resume, quiet=getattr(args, "quiet", False))
        return trainer.run()
    finally:
        if trainer is not None:
            trainer.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _in_main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()
