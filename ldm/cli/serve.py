"""`python -m ldm serve`: the AUTOMATIC1111 HTTP API over the library (ldm/serve/, docs/server.md).

    python -m ldm serve                              the demo model on http://127.0.0.1:7860
    python -m ldm serve --ckpt v1-5.safetensors      one checkpoint
    python -m ldm serve --models-dir models/         every .ckpt/.safetensors under it, switchable
    python -m ldm serve --models-dir models/ --ckpt sub/v1-5.safetensors    ... that one first

Needs the optional extra: pip install -e ".[serve]" (FastAPI and uvicorn).
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import logging
import sys
from pathlib import Path

from .common import UsageError, add_model_flags, check_model_flags, load_model
from .generation import check_outdir


def add_parser(commands) -> None:
    parser = commands.add_parser("serve", help="serve the AUTOMATIC1111 web API (/sdapi/v1) on this machine")
    add_model_flags(parser)
    add = parser.add_argument
    add("--models-dir", type=str, help="a folder of .ckpt/.safetensors files (sub-folders too), any of which a "
                                        "client may select; the one loaded first is --ckpt's, named as listed "
                                        "(\"sub/model.safetensors\"), else the first in name order")
    add("--host", type=str, default="127.0.0.1", help="the address to listen on (default: 127.0.0.1; one that "
                                                      "other machines can reach needs --listen)")
    add("--port", type=int, default=7860, help="the port (default: 7860, A1111's)")
    add("--listen", action="store_true", help="listen on every address (0.0.0.0), reachable from other machines, "
                                              "as A1111's --listen; use --api-auth with it")
    add("--api-auth", type=str, metavar="USER:PASSWORD", help="require HTTP basic authentication (A1111's --api-auth)")
    add("--outdir", type=str, default="outputs", help="where images are saved (OUTDIR/samples/NNNNN.png, as the "
                                                      "CLI writes them) when a request sets save_images (default: "
                                                      "outputs)")
    add("--no_watermark", action="store_true", help="put no invisible watermark in the images")


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..serve.app import BodyLimit, create_app
        from ..serve.errors import Refused
        from ..serve.models import Checkpoints
        from ..serve.server import Server
    except ImportError as error:
        raise UsageError(f"serve needs FastAPI and uvicorn ({error.name} is missing): pip install -e \".[serve]\"") \
            from None
    host, auth = check_serve_flags(args)
    models_dir, first = (Path(args.models_dir), args.ckpt) if args.models_dir else (None, None)
    if models_dir:
        args.ckpt = None
    check_model_flags(args)  # --ckpt (the demo model when none), --device, --dtype
    checkpoints = Checkpoints(models_dir, None if models_dir else Path(args.ckpt))
    if not checkpoints.listed:
        raise UsageError(f"--models-dir {args.models_dir}: no .ckpt or .safetensors file in it")
    try:
        selected = checkpoints.find(first) if first else checkpoints.listed[0]
    except Refused as error:
        raise UsageError(f"--ckpt {first}: {error.message}") from None
    outdir = Path(args.outdir)
    check_outdir(outdir, images=1, pixels=64 * 64)

    def load(path: Path):
        flags = copy.copy(args)
        flags.ckpt = str(path)
        return load_model(flags)

    logging.getLogger("ldm.serve").setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s ldm.serve: %(message)s"))
    logging.getLogger("ldm.serve").addHandler(handler)
    server = Server(checkpoints, load, outdir, no_watermark=args.no_watermark)
    server.start(selected)
    app = BodyLimit(create_app(server, auth), server.limits.body_bytes)
    print(f"serving {checkpoints.title(server.selected)} on http://{host}:{args.port} (the A1111 API under "
          f"/sdapi/v1; its schema at /docs); images to {outdir}", file=sys.stderr, flush=True)
    # Ctrl-C: requests still waiting on a job get 10 s, then the server stops (a job in the middle of
    # its steps is not waited for).
    uvicorn.run(app, host=host, port=args.port, log_level="info", timeout_graceful_shutdown=10)
    return 0


def check_serve_flags(args: argparse.Namespace) -> tuple[str, tuple[str, str] | None]:
    """-> (the address to bind, (user, password) or None), before anything is loaded."""
    if args.models_dir and args.variant:
        raise UsageError("--variant with --models-dir: each file's variant is detected (a .yaml beside it decides)")
    if args.models_dir and not Path(args.models_dir).is_dir():
        raise UsageError(f"--models-dir {args.models_dir}: no such folder")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: must be in 1..65535")
    host = "0.0.0.0" if args.listen and args.host == "127.0.0.1" else args.host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not args.listen:
        raise UsageError(f"--host {host}: other machines could reach the server there; add --listen to mean it")
    if args.listen:
        print(f"python -m ldm serve: warning: listening on {host}: other machines can reach this server"
              + ("" if args.api_auth else " and, without --api-auth, use it"), file=sys.stderr)
    auth = None
    if args.api_auth is not None:
        user, colon, password = args.api_auth.partition(":")
        if not colon or not user or not password:
            raise UsageError("--api-auth: give USER:PASSWORD (both non-empty)")
        auth = (user, password)
    return host, auth
