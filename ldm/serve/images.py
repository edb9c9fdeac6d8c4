"""Images in and out of the API: base64 PNGs, as AUTOMATIC1111 sends and reads them, and the
`parameters` text of a PNG read back into fields (A1111's /png-info).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import warnings

from PIL import Image

from ..outputs import png_bytes
from .errors import Refused


def encode(image: Image.Image) -> str:
    """A PNG with the image's `parameters` text chunk, as plain base64 (no data: prefix): the
    bytes the output writer puts in a file."""
    return base64.b64encode(png_bytes(image, image.info.get("parameters"))).decode("ascii")


def decode(text: str, field: str, max_pixels: int) -> Image.Image:
    """A base64 image (raw, or a data:image/...;base64, URL as A1111 takes it), decoded whole;
    Refused naming the field when it is not base64, not an image, truncated, or over max_pixels
    (checked from the header, before the pixels are decoded)."""
    if not isinstance(text, str) or not text.strip():
        raise Refused(field, "no image: send a base64 PNG (or JPEG/WebP)")
    text = text.strip()
    if text.startswith(("http://", "https://")):
        raise Refused(field, "this server fetches no URLs; send the image itself, base64-encoded")
    if text.startswith("data:"):
        text = text.split(";", 1)[-1].split(",", 1)[-1]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(field, "not valid base64") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                raise Refused(field, f"{image.width}x{image.height} is over this server's {max_pixels} pixels",
                              status=413)
            image.load()
            return image
    except Refused:
        raise
    except Exception as error:  # noqa: BLE001 - PIL raises OSError, ValueError, SyntaxError, zlib errors...
        raise Refused(field, f"not a readable image ({type(error).__name__}: {str(error)[:200]})") from None


# A1111's modules/infotext_utils.py: "Key: value" pairs of the fields line (a value may be a
# JSON-quoted string) and the WxH sizes, split into "Key-1" and "Key-2".
FIELD = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
SIZE = re.compile(r"^(\d+)x(\d+)$")


def parse_parameters(text: str) -> dict[str, str]:
    """A `parameters` text -> {"Prompt", "Negative prompt", "Steps", "Sampler", "Size-1", ...}, all
    values strings, as A1111's parse_generation_parameters reads it (without the defaults it adds
    for fields that are absent): the prompt lines, then the lines after "Negative prompt:", and
    the last line as fields when it holds at least three."""
    *lines, last = text.strip().split("\n")
    if len(FIELD.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    fields = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in FIELD.findall(last):
        if len(value) > 1 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                pass
        size = SIZE.match(value)
        if size:
            fields[f"{key}-1"], fields[f"{key}-2"] = size.groups()
        else:
            fields[key] = value
    return fields
