"""The HTTP routes: AUTOMATIC1111's /sdapi/v1 paths, each a few lines over server.py, generate.py
and extras.py (docs/server.md lists every endpoint and field); /ldm/v1/model, what the loaded
model can do; and the browser UI's page at / (ldm/serve/ui/).

Handlers are plain functions, which FastAPI runs in its thread pool: one waiting on its job
(worker.run) blocks only its own thread, so /progress and /interrupt answer while a job runs.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel

from .. import __version__
from ..tasks.depth2img import depth_image
from . import extras, generate, images, names
from .errors import Refused
from .requests import Img2Img, Txt2Img
from .server import Server

UI = Path(__file__).parent / "ui"
UI_FILES = {"app.js": "text/javascript", "style.css": "text/css"}

# What /png-info leaves out of `items`, as A1111's read_info_from_image does.
IGNORED_INFO = {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background", "timestamp",
                "duration", "progressive", "progression", "icc_profile", "chromaticity", "photoshop"}


class ImageBody(BaseModel):  # /png-info and /ldm/v1/depth
    image: str


def create_app(server: Server, api_auth: tuple[str, str] | None = None) -> FastAPI:
    app = FastAPI(title="ldm: the AUTOMATIC1111 API subset", version=__version__)
    dependencies = [Depends(basic_auth(*api_auth))] if api_auth else []
    api = APIRouter(prefix="/sdapi/v1", dependencies=dependencies)

    @app.exception_handler(Refused)
    def refused(request: Request, error: Refused) -> JSONResponse:  # A1111's envelope (errors.py)
        return JSONResponse(status_code=error.status, content={"error": "HTTPException", "detail": str(error),
                                                              "body": "", "errors": f"{error.status}: {error}"})

    @app.exception_handler(Exception)
    def failed(request: Request, error: Exception) -> JSONResponse:  # a job that failed: it fails alone
        return JSONResponse(status_code=500, content={"error": type(error).__name__, "detail": "", "body": "",
                                                      "errors": str(error)})

    @api.post("/txt2img")
    def txt2img(request: Txt2Img) -> dict:
        plan = generate.plan(server, request)
        return server.worker.run("scripts_txt2img", lambda run: generate.run_plan(server, plan, run),
                                 job_count=request.n_iter, about=plan.about)

    @api.post("/img2img")
    def img2img(request: Img2Img) -> dict:
        plan = generate.plan(server, request)
        return server.worker.run("scripts_img2img", lambda run: generate.run_plan(server, plan, run),
                                 job_count=request.n_iter, about=plan.about)

    @api.post("/extra-single-image")
    def extra_single_image(request: extras.ExtrasSingleImage) -> dict:
        image = extras.check(server, request)
        return server.worker.run("extras", lambda run: extras.upscale(server, request, image, run))

    @api.post("/png-info")
    def png_info(request: ImageBody) -> dict:
        image = images.decode(request.image, "image", server.limits.upload_pixels)
        items = {k: v if isinstance(v, (str, int, float, bool)) else str(v) for k, v in image.info.items()
                 if k not in IGNORED_INFO}
        text = items.pop("parameters", None) or ""
        return {"info": text, "items": items, "parameters": images.parse_parameters(text)}

    @api.get("/progress")
    def progress(skip_current_image: bool = False) -> dict:
        done, eta, state, preview = server.worker.progress()
        current = None if preview is None or skip_current_image else images.encode(preview)
        return {"progress": done, "eta_relative": eta, "state": state, "current_image": current, "textinfo": None}

    @api.post("/interrupt")
    def interrupt() -> dict:
        server.worker.interrupt()
        return {}

    @api.post("/skip")
    def skip() -> None:
        server.worker.skip()

    @api.get("/samplers")
    def samplers() -> list:
        return names.samplers_json()

    @api.get("/schedulers")
    def schedulers() -> list:
        return names.schedulers_json()

    @api.get("/sd-models")
    def sd_models() -> list:
        return server.checkpoints.as_json()

    @api.post("/refresh-checkpoints")
    def refresh_checkpoints() -> None:
        server.checkpoints.refresh()

    @api.get("/upscalers")
    def upscalers() -> list:
        return extras.upscalers(server.model.sd)

    @api.get("/options")
    def get_options() -> dict:
        return server.options()

    @api.post("/options")
    def set_options(options: dict[str, Any] = Body(...)) -> None:
        server.set_options(options)

    @api.get("/scripts")
    def scripts() -> dict:  # no scripts here (webuiapi asks on start, for its extensions)
        return {"txt2img": [], "img2img": []}

    # This project's own, for the browser UI: what the loaded model can do.
    ours = APIRouter(prefix="/ldm/v1", dependencies=dependencies)

    @ours.get("/model")
    def model() -> dict:
        sd = server.model.sd
        return {"title": server.checkpoints.title(server.selected), "variant": sd.variant, "task": sd.config.task,
                "image_size": sd.config.image_size,
                "size_multiple": sd.config.autoencoder.downsampling_factor * sd.unet.downsampling_factor}

    @ours.post("/depth")
    def depth(request: ImageBody) -> dict:
        """MiDaS's depth map of an image, as the depth model conditions on it (white: near)."""
        image = images.decode(request.image, "image", server.limits.upload_pixels).convert("RGB")
        return server.worker.run("depth", lambda run: {"image": images.encode(depth_map(server, image))})

    # The browser UI (ldm/serve/ui/): its page and the two files it loads, by name.
    page = APIRouter(dependencies=dependencies)

    @page.get("/", response_class=FileResponse)
    def index() -> FileResponse:
        return FileResponse(UI / "index.html")

    @page.get("/ui/{name}", response_class=FileResponse)
    def ui_file(name: str) -> FileResponse:
        if name not in UI_FILES:
            raise HTTPException(404, "Not Found")
        return FileResponse(UI / name, media_type=UI_FILES[name])

    for router in (api, ours, page):
        app.include_router(router)
    return app


def depth_map(server: Server, image):
    sd = server.model.get(server.selected)
    if sd.config.task != "depth2img":
        raise Refused("sd_model_checkpoint", f"the loaded model ({sd.variant}) has no depth estimator; load a depth "
                                             "checkpoint (512-depth-ema)")
    try:
        return depth_image(sd.estimate_depth(image))[0]
    except ValueError as error:
        raise Refused("image", str(error)) from None


def basic_auth(user: str, password: str):
    """A1111's --api-auth: HTTP basic, both parts compared in constant time."""
    security = HTTPBasic(auto_error=False)

    def check(credentials: HTTPBasicCredentials | None = Depends(security)) -> None:
        if credentials is None:
            raise HTTPException(401, "Not authenticated", headers={"WWW-Authenticate": "Basic"})
        right_user = secrets.compare_digest(credentials.username.encode(), user.encode())
        right_password = secrets.compare_digest(credentials.password.encode(), password.encode())
        if not (right_user and right_password):
            raise HTTPException(401, "Incorrect username or password", headers={"WWW-Authenticate": "Basic"})

    return check


class BodyLimit:
    """ASGI wrapper: a request body over `most` bytes is answered 413 before (Content-Length) or
    while (chunked) it is read, and never held whole."""

    def __init__(self, app, most: int):
        self.app, self.most = app, most

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.most:
            return await self.too_large(send)
        received, started = 0, False

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.most:
                raise TooLarge()
            return message

        async def watched_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except TooLarge:
            if not started:
                await self.too_large(send)

    async def too_large(self, send) -> None:
        message = f"request body: over this server's {self.most} bytes"
        body = json.dumps({"error": "HTTPException", "detail": message, "body": "", "errors": f"413: {message}"})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body.encode()})


class TooLarge(BaseException):
    """Not an Exception: FastAPI turns any Exception raised while it reads a body into a 400, and
    this one must reach BodyLimit, which answers 413."""
