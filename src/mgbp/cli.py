"""The `mgbp` command: one thin entry point that dispatches to the subcommand modules.

Each subcommand is a module of `mgbp.commands` (the command line only; the work is the library code it
calls) and exposes two functions: `add_arguments(parser)` and `run(args) -> int`. This module only wires
them up and turns `MgbpError` (anything a user can cause) into a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mgbp import __version__
from mgbp.errors import MgbpError

# name -> (module, one-line help). Modules are imported lazily so `mgbp --help` stays fast.
COMMANDS: dict[str, tuple[str, str]] = {
    "upscale": ("mgbp.commands.upscale", "upscale images, folders or videos"),
    "eval": ("mgbp.commands.eval", "evaluate methods on datasets (PSNR-Y / SSIM-Y / NIQE / RMSE)"),
    "models": ("mgbp.commands.models", "list model presets and shipped weights"),
    "convert": ("mgbp.commands.convert", "convert the authors' .model files to safetensors"),
    "train": ("mgbp.commands.train", "train a generator from a YAML config"),
    "sweep": ("mgbp.commands.sweep", "perception-distortion sweep over the noise amplitude W"),
    "linearscope": ("mgbp.commands.linearscope", "impulse response of the network with frozen ReLUs"),
    "consistency": ("mgbp.commands.consistency", "measure or enforce S_f(Y) = x (back-projection)"),
    "export": ("mgbp.commands.export", "export an image MGBPv2 model to ONNX (dynamic sizes, checked in ONNX Runtime)"),
    "serve": ("mgbp.commands.serve", "local web app: upscale images and videos, slide W with a live preview"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgbp", description="Multi-Grid Back-Projection super-resolution")
    parser.add_argument("--version", action="version", version=f"mgbp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if name != only:  # listed in --help without importing its module
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Import only the module of the command asked for (torch-heavy modules load lazily).
    wanted = next((a for a in argv if not a.startswith("-")), None)
    only = wanted if wanted in COMMANDS else None
    if only is None and wanted is not None:
        print(f"mgbp: error: unknown command {wanted!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    try:
        parser = build_parser(only)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "mgbp":
            raise  # our own code is broken: a traceback, never "unavailable"
        # an optional extra that is not installed (gradio, onnx, ray, ...): one line, not a traceback
        print(f"mgbp: error: command {only!r} needs {exc.name}, which is not installed", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args._run(args) or 0)
    except MgbpError as exc:
        print(f"mgbp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mgbp {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mgbp models --json | head`: the reader left; say nothing more
        _silence_stdout()
        return 128 + 13  # what a shell reports for a process ended by SIGPIPE


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise BrokenPipeError again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
