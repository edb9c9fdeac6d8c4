"""Where generated images go, as the original scripts put them: OUTDIR/samples/00000.png, ... and
OUTDIR/grid-0000.png, numbered past the files already there, each PNG written atomically and never
over an existing file, with its generation parameters in a `parameters` text chunk (the layout
other Stable Diffusion tools read). Plain functions over PIL images and paths: the command line,
a server or a batch runner call them alike.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import os
import re
from pathlib import Path
from typing import BinaryIO, Callable

from PIL import Image, PngImagePlugin

from checkpoints_convert.save import new_partial

from .watermark import put_watermark

SAMPLE_PATTERN, SAMPLE_DIGITS = "{n:0{width}d}.png", 5
GRID_PATTERN, GRID_DIGITS = "grid-{n:0{width}d}.png", 4
DEPTH_PATTERN = "depth-{n:0{width}d}.png"  # depth2img's depth map, beside the grid


def save_sample(image: Image.Image, outdir: str | Path, parameters: str | None = None) -> Path:
    """OUTDIR/samples/<next number>.png (the folders are made when missing). `parameters`: the text
    chunk; None takes the one the task put in image.info (sd.txt2img's images carry theirs)."""
    folder = Path(outdir) / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    if parameters is None:
        parameters = image.info.get("parameters")
    return save_png(image, folder, SAMPLE_PATTERN, SAMPLE_DIGITS, parameters)


def save_grid(images: list[Image.Image], outdir: str | Path, columns: int, watermark: bytes | None = None) -> Path:
    """OUTDIR/grid-<next number>.png: the images in rows of `columns`; `watermark`: the grid
    carries that invisible mark (ldm/watermark.py), as the original scripts' grids do, when it is
    large enough (256x256 pixels)."""
    folder = Path(outdir)
    folder.mkdir(parents=True, exist_ok=True)
    grid = make_grid(images, columns)
    if watermark is not None:  # a grid under 256x256 pixels comes back unmarked (put_watermark)
        grid = put_watermark(grid, watermark)
    return save_png(grid, folder, GRID_PATTERN, GRID_DIGITS, None)


def save_depth(image: Image.Image, outdir: str | Path) -> Path:
    """OUTDIR/depth-<next number>.png: the depth map a depth2img run was conditioned on."""
    folder = Path(outdir)
    folder.mkdir(parents=True, exist_ok=True)
    return save_png(image, folder, DEPTH_PATTERN, GRID_DIGITS, None)


def save_png(image: Image.Image, folder: Path, pattern: str, digits: int, parameters: str | None) -> Path:
    """Write `image` as the next free `pattern` number in `folder`, atomically (written_then_linked)."""
    def link(written: Path) -> Path:
        number = next_number(folder, pattern)
        while True:
            target = folder / pattern.format(n=number, width=digits)
            try:
                os.link(written, target)
                return target
            except FileExistsError:
                number += 1

    return written_then_linked(saver(image, "PNG", parameters), folder / pattern.format(n=0, width=digits), link)


def save_at(image: Image.Image, path: str | Path, parameters: str | None) -> str:
    """`image` as the PNG `path`, a number fixed in advance (a run's image i is always base + i,
    ldm/manifest.py), atomically. A file already there is kept when it holds the same bytes (a run
    that is resumed made it before it was stopped); otherwise FileExistsError. -> the PNG's sha256."""
    path, data = Path(path), png_bytes(image, parameters)

    def link(written: Path) -> Path:
        try:
            os.link(written, path)
        except FileExistsError:
            if path.read_bytes() != data:
                raise FileExistsError(errno.EEXIST, "a file with another image is there", str(path)) from None
        return path

    written_then_linked(lambda f: f.write(data), path, link)
    return hashlib.sha256(data).hexdigest()


def save_new(image: Image.Image, path: str | Path) -> Path:
    """Write `image` to `path` (its format told by the extension), atomically and never over an
    existing file (FileExistsError), its `parameters` text kept in a PNG."""
    path = Path(path)
    image_format = Image.registered_extensions()[path.suffix.lower()]

    def link(written: Path) -> Path:
        os.link(written, path)
        return path

    return written_then_linked(saver(image, image_format, image.info.get("parameters")), path, link)


def saver(image: Image.Image, image_format: str, parameters: str | None) -> Callable[[BinaryIO], None]:
    """Writes `image` to a file object (a PNG with its `parameters` text chunk)."""
    def write(f: BinaryIO) -> None:
        image.save(f, format=image_format, **({"pnginfo": png_text(parameters)} if image_format == "PNG" else {}))

    return write


def written_then_linked(write: Callable[[BinaryIO], None], near: Path, link: Callable[[Path], Path]) -> Path:
    """The image is written (`write`) to a hidden temporary file beside `near` first and `link`ed into place
    (os.link, which never replaces a file) only when complete, so an interrupted run leaves no
    half-written image and an existing file is never replaced. The temporary file is created as any
    new file is (0666, less the umask, which the kernel applies), so the image gets the permissions
    the user's other files get; the same mechanism as checkpoints (checkpoints_convert/save.py)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    tmp, fd = new_partial(near, lambda name: os.open(name, flags, 0o666))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        return link(tmp)
    finally:
        os.unlink(tmp)


def png_text(parameters: str | None) -> PngImagePlugin.PngInfo:
    """The PNG text chunks of a generated image: its `parameters`, when it has them."""
    info = PngImagePlugin.PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)
    return info


def png_bytes(image: Image.Image, parameters: str | None) -> bytes:
    """The bytes of the PNG file save_sample would write (a server sends them without a file)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_text(parameters))
    return buffer.getvalue()


def next_number(folder: Path, pattern: str) -> int:
    """One past the highest number already used by `pattern` in `folder` (0 if none)."""
    prefix, suffix = pattern.split("{")[0], pattern.split("}")[-1]
    used = [int(m.group(1)) for p in folder.iterdir()
            if (m := re.fullmatch(re.escape(prefix) + r"(\d+)" + re.escape(suffix), p.name))]
    return max(used, default=-1) + 1


def make_grid(images: list[Image.Image], columns: int) -> Image.Image:
    """Images in rows of `columns` (the original's --n_rows goes to torchvision's make_grid as nrow,
    which is the number of images per row)."""
    rows = -(-len(images) // columns)
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width, rows * height))
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * width, (i // columns) * height))
    return grid


# How AUTOMATIC1111's PNG "Sampler:" field names each sampler of samplers.SAMPLERS (its Karras
# variants add " Karras"). dpm_solver, the v2 repository's DPM-Solver++(2M) in continuous time, is
# not A1111's "DPM++ 2M" (k-diffusion's, in sigma space): it keeps a name of its own.
SAMPLER_LABELS = {
    "ddim": "DDIM", "plms": "PLMS", "dpm_solver": "DPM-Solver++ 2M (v2)", "euler": "Euler", "euler_a": "Euler a",
    "heun": "Heun", "dpm2": "DPM2", "dpm2_a": "DPM2 a", "lms": "LMS", "dpmpp_2s_a": "DPM++ 2S a",
    "dpmpp_2m": "DPM++ 2M", "dpmpp_sde": "DPM++ SDE", "dpmpp_2m_sde": "DPM++ 2M SDE",
}


def sampler_label(sampler: str, karras: bool = False) -> str:
    """A1111's name of a sampler ("DPM++ 2M Karras"); a sampler it does not know, in capitals."""
    return SAMPLER_LABELS.get(sampler, sampler.upper()) + (" Karras" if karras else "")


def parameters_text(prompt: str, *, negative_prompt: str, steps: int, sampler: str, guidance_scale: float, seed: int,
                    width: int, height: int, model_hash: str | None, model: str, eta: float | None,
                    karras: bool = False, strength: float | None = None) -> str:
    """The `parameters` PNG text chunk, in the layout other Stable Diffusion tools read:

        prompt
        Negative prompt: ...
        Steps: 50, Sampler: DDIM, CFG scale: 7.5, Seed: 42, Size: 512x512, Model hash: ..., ...

    (no "Model hash" for a model that is not one file: a diffusers folder, or built in memory; no
    "Eta" for a sampler that adds no noise).
    """
    lines = [prompt, f"Negative prompt: {negative_prompt}"]
    fields = [f"Steps: {steps}", f"Sampler: {sampler_label(sampler, karras)}", f"CFG scale: {guidance_scale}",
              f"Seed: {seed}", f"Size: {width}x{height}"] + ([f"Model hash: {model_hash}"] if model_hash else []) + [
              f"Model: {model}"] + ([f"Eta: {eta}"] if eta is not None else [])
    if strength is not None:
        fields.append(f"Denoising strength: {strength}")
    return "\n".join(lines + [", ".join(fields)])


def file_hash(path: str | Path) -> str:
    """The first 10 hex digits of the file's sha256 (the "Model hash" other tools print)."""
    return file_sha256(path)[:10]


def file_sha256(path: str | Path) -> str:
    """The file's sha256 (hex), read once per version of the file (its path, size and modification
    time): a model's hash is asked for by every image's parameters and by the server's listing."""
    status = os.stat(path)
    return _sha256(str(Path(path).resolve()), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
