"""`mgbp serve`: a local web page to upscale images and videos with the generator of Algorithm 1 and to slide
the noise amplitude W (line 1) along the perception-distortion trajectory (Fig. 14) with a live preview.

The page lives in `mgbp.web.app` (Gradio, the optional extra `mgbp[web]`); this module only reads the options.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mgbp.web.app import DEFAULT_MAX_UPLOAD_MB

    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens the app, "
                             "which has no login, to the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help=f"largest upload accepted, in MB (default {DEFAULT_MAX_UPLOAD_MB})")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the address")


def run(args: argparse.Namespace) -> int:
    from mgbp.web.app import serve

    serve(host=args.host, port=args.port, device=args.device, max_upload_mb=args.max_upload_mb, quiet=args.quiet)
    return 0
