"""The invisible watermark the original scripts put in every image: the `dwtDct` method of the
`invisible-watermark` package (0.2.0, imwatermark/maxDct.py `EmbedMaxDct`), written out by hand.

The original scripts/txt2img.py does, for each sample and for the grid:

    bgr = cv2.cvtColor(np.array(img), cv2.COLOR_RGB2BGR)
    bgr = WatermarkEncoder(b"StableDiffusionV1").encode(bgr, "dwtDct")   # b"SDV2" in the v2 scripts

and its test_watermark.py reads the bytes back with WatermarkDecoder("bytes", 136).decode(bgr, "dwtDct").
What that does, step by step (each quirk below is the package's, kept so that the marks are the
same pixel for pixel, and marked where it happens):

    pixels (uint8) -> YUV (OpenCV's 8-bit fixed-point conversion, rounded, saturated)
    U plane -> one level of the Haar DWT -> the approximation band cA (half the size)
    cA in 4x4 blocks, row by row; block k carries bit k mod len(bits):
        the block's largest coefficient by magnitude, the first one (DC) left out, is moved to
        |c| = (floor(|c| / 36) + 1/4 + bit/2) * 36, its sign kept (a quantisation-index mark)
    inverse DWT -> written back into the uint8 plane (truncated) -> YUV to pixels

Reading takes the same block's largest coefficient and calls the bit 1 when |c| mod 36 > 18; each
bit is the majority of all the blocks that carry it. Despite its name the method takes no DCT: the
package's `dwtDct` quantises the DWT band itself (only its `dwtDctSvd` method takes a DCT). The
scales are [0, 36, 36] for Y, U, V, but the package only visits the first two planes, so the mark
lives in U alone.

The package refuses images of fewer than 256 x 256 pixels (rows x columns); so does this module
(`fits`). The mark is fragile: flat or smooth images read back as garbage even untouched
(docs/watermark.md has what survives JPEG, resizing and cropping).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# The bytes each model family's original scripts put in (the v1 scripts: CompVis's txt2img.py and
# img2img.py; v1-inpainting: RunwayML's inpainting scripts; v2: every Stability v2 script and demo).
# The demo model is this project's own: its bytes are ours.
MARKS = {
    "v1": b"StableDiffusionV1",
    "v1-inpainting": b"StableDiffusionV1-Inpainting",
    "v2": b"SDV2", "v2-v": b"SDV2", "v2-inpainting": b"SDV2", "v2-depth": b"SDV2", "x4-upscaler": b"SDV2",
    "demo": b"ldm-demo",
}
MIN_PIXELS = 256 * 256  # the package's `r * c < 256 * 256` refusal
SCALE = 36  # the U plane's quantisation step (scales [0, 36, 36]; Y's 0 means unmarked, V is never visited)
BLOCK = 4  # cA is cut into BLOCK x BLOCK blocks, one bit each

# OpenCV's 8-bit BGR <-> YUV (color_yuv.simd.hpp): coefficients in 14-bit fixed point,
# CV_DESCALE(x, 14) = (x + 2^13) >> 14, Y = .299 R + .587 G + .114 B, U = .492 (B - Y) + 128,
# V = .877 (R - Y) + 128; back: B = Y + 2.032 U', G = Y - .395 U' - .581 V', R = Y + 1.140 V'.
SHIFT = 14
R2Y, G2Y, B2Y, B2U, R2V = 4899, 9617, 1868, 8061, 14369
U2B, U2G, V2G, V2R = 33292, -6472, -9519, 18678
HALF = 128

# The Haar filters as pywt holds them (dec_lo = rec_lo = [s, s], dec_hi = [-s, s], rec_hi = [s, -s]).
S = 0.7071067811865476


def mark_for(config) -> bytes:
    """A model's mark: its preset's (MARKS), or for a configuration of its own, its family's by the
    text encoder (CLIP: v1, OpenCLIP: v2)."""
    if config.name in MARKS:
        return MARKS[config.name]
    return MARKS["v2"] if config.text_encoder.kind == "openclip" else MARKS["v1"]


def fits(width: int, height: int) -> bool:
    """Whether an image of this size can carry the mark (the package refuses fewer than 256 x 256 pixels)."""
    return width * height >= MIN_PIXELS


# -- colour ----------------------------------------------------------------------------------------

def descale(x: np.ndarray) -> np.ndarray:
    """OpenCV's CV_DESCALE: x / 2^14, rounded half up (an arithmetic shift floors negatives too)."""
    return (x + (1 << (SHIFT - 1))) >> SHIFT


def rgb_to_yuv(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [H, W, 3] uint8 YUV, as cv2.cvtColor(bgr, COLOR_BGR2YUV)."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    y = descale(r * R2Y + g * G2Y + b * B2Y)  # not yet saturated: U and V are made from this Y
    u = descale((b - y) * B2U + (HALF << SHIFT))
    v = descale((r - y) * R2V + (HALF << SHIFT))
    return np.clip(np.stack([y, u, v], axis=-1), 0, 255).astype(np.uint8)


def yuv_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 YUV -> [H, W, 3] uint8 RGB, as cv2.cvtColor(yuv, COLOR_YUV2BGR) (then BGR -> RGB)."""
    y, u, v = (yuv[..., i].astype(np.int64) for i in range(3))
    u, v = u - HALF, v - HALF
    b = y + descale(u * U2B)
    g = y + descale(v * V2G + u * U2G)
    r = y + descale(v * V2R)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


# -- one level of the 2-D Haar transform, in pywt's arithmetic ----------------------------------------

def haar_split(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """pywt.dwt(x, "haar", axis=axis) for an even length: the pairs (x0, x1) along `axis` ->
    a = s x1 + s x0, d = -s x1 + s x0, summed in pywt's order (its convolution adds the later
    sample's product first), so the floats are the same to the last bit."""
    x0, x1 = np.take(x, np.arange(0, x.shape[axis], 2), axis), np.take(x, np.arange(1, x.shape[axis], 2), axis)
    return S * x1 + S * x0, -S * x1 + S * x0


def haar_join(a: np.ndarray, d: np.ndarray, axis: int) -> np.ndarray:
    """pywt.idwt(a, d, "haar", axis=axis): x0 = s a + s d, x1 = s a - s d, interleaved along `axis`."""
    x0, x1 = S * a + S * d, S * a + -S * d
    out = np.stack([x0, x1], axis=axis + 1)
    shape = list(a.shape)
    shape[axis] *= 2
    return out.reshape(shape)


def dwt2(plane: np.ndarray) -> dict[str, np.ndarray]:
    """pywt.dwtn(plane, "haar"): rows (axis 0) first, then columns; keys name each axis's band
    ("ad": approximation along the rows, detail along the columns). pywt.dwt2 returns
    (aa, (da, ad, dd)) as (cA, (cH, cV, cD))."""
    a, d = haar_split(plane.astype(np.float64), 0)
    aa, ad = haar_split(a, 1)
    da, dd = haar_split(d, 1)
    return {"aa": aa, "ad": ad, "da": da, "dd": dd}


def idwt2(bands: dict[str, np.ndarray]) -> np.ndarray:
    """pywt.idwtn: columns (axis 1) first, then rows."""
    a = haar_join(bands["aa"], bands["ad"], 1)
    d = haar_join(bands["da"], bands["dd"], 1)
    return haar_join(a, d, 0)


# -- the mark in the approximation band --------------------------------------------------------------

def blocks_of(band: np.ndarray) -> np.ndarray:
    """cA [h, w] -> its whole BLOCK x BLOCK blocks, row by row: [n, BLOCK * BLOCK] (a copy)."""
    rows, cols = band.shape[0] // BLOCK, band.shape[1] // BLOCK
    cut = band[: rows * BLOCK, : cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK)
    return cut.transpose(0, 2, 1, 3).reshape(rows * cols, BLOCK * BLOCK)


def put_blocks(band: np.ndarray, blocks: np.ndarray) -> None:
    """blocks_of's inverse, in place; the band's rows and columns past the last whole block stay."""
    rows, cols = band.shape[0] // BLOCK, band.shape[1] // BLOCK
    band[: rows * BLOCK, : cols * BLOCK] = blocks.reshape(rows, cols, BLOCK, BLOCK).transpose(0, 2, 1, 3).reshape(
        rows * BLOCK, cols * BLOCK)


def largest(blocks: np.ndarray) -> np.ndarray:
    """Each block's position of the largest |coefficient|, the first (DC) left out; the first on ties."""
    return np.argmax(np.abs(blocks[:, 1:]), axis=1) + 1


def embed(band: np.ndarray, bits: np.ndarray) -> None:
    """EmbedMaxDct.encode_frame + diffuse_dct_matrix, in place: block k's largest coefficient c ->
    sign(c) (floor(|c| / SCALE) + 1/4 + bit / 2) SCALE, bit = bits[k mod len(bits)]."""
    blocks = blocks_of(band)
    n = np.arange(len(blocks))
    pos = largest(blocks)
    value = np.abs(blocks[n, pos])
    bit = bits[n % len(bits)]
    level = (value // SCALE + 0.25 + 0.5 * bit) * SCALE
    blocks[n, pos] = np.where(blocks[n, pos] >= 0, level, -1.0 * level)  # the package's -1.0 * (...) * scale
    put_blocks(band, blocks)


def votes(band: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """EmbedMaxDct.decode_frame + infer_dct_matrix: per bit, how many of its blocks read 1, and of how many."""
    blocks = blocks_of(band)
    n = np.arange(len(blocks))
    value = np.abs(blocks[n, largest(blocks)])
    ones = (value % SCALE > 0.5 * SCALE).astype(np.int64)
    which = n % length
    return np.bincount(which, weights=ones, minlength=length), np.bincount(which, minlength=length)


# -- images ------------------------------------------------------------------------------------------

def check_size(rgb: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an [H, W, 3] uint8 RGB array, got {rgb.dtype} {list(rgb.shape)}")
    height, width = rgb.shape[:2]
    if not fits(width, height):
        raise ValueError(f"a {width}x{height} image is too small for the watermark: it needs at least "
                         f"256x256 pixels (rows x columns >= {MIN_PIXELS}), as invisible-watermark")


def marked_region(rgb: np.ndarray) -> tuple[slice, slice]:
    """The pixels the package works on: the top-left rows // 4 * 4 by columns // 4 * 4 (whole 4x4 cells)."""
    return slice(0, rgb.shape[0] // 4 * 4), slice(0, rgb.shape[1] // 4 * 4)


def marked_plane(u: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """The U plane [h, w] (uint8) -> the marked plane, as floats before the package's uint8 write:
    its Haar bands, the bits embedded in cA, the inverse transform."""
    bands = dwt2(u)
    embed(bands["aa"], bits)
    # The package's quirk: it gives pywt.idwt2 (cA, (cV, cH, cD)) where dwt2 gave (cA, (cH, cV, cD)),
    # so the two detail bands trade places: every 2x2 cell of the U plane comes back transposed.
    bands["da"], bands["ad"] = bands["ad"], bands["da"]
    return idwt2(bands)


def encode(rgb: np.ndarray, mark: bytes) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> the same with `mark` in it (WatermarkEncoder.encode(bgr, "dwtDct"))."""
    check_size(rgb)
    if not mark:
        raise ValueError("the watermark is empty: give at least one byte")
    bits = np.unpackbits(np.frombuffer(mark, dtype=np.uint8))  # most significant bit first
    yuv = rgb_to_yuv(rgb)
    rows, cols = marked_region(rgb)
    # The package writes the floats into its uint8 array, which truncates them (11.99 -> 11). U lies
    # in 17..239 for every RGB colour and a mark moves a coefficient of cA by at most 27, a pixel by
    # at most 13.5, so no value leaves 0..255 (numpy would wrap it).
    yuv[rows, cols, 1] = marked_plane(yuv[rows, cols, 1], bits).astype(np.uint8)
    return yuv_to_rgb(yuv)


def decode(rgb: np.ndarray, length: int) -> bytes:
    """The `length` bytes the mark carries (WatermarkDecoder("bytes", 8 * length).decode(bgr, "dwtDct")).
    A bit no block carries (an image too small for the length) reads 0, as the package's NaN mean does."""
    check_size(rgb)
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length={length!r}: the number of bytes to read, an int >= 1")
    rows, cols = marked_region(rgb)
    band = dwt2(rgb_to_yuv(rgb)[rows, cols, 1])["aa"]
    ones, total = votes(band, 8 * length)
    with np.errstate(invalid="ignore", divide="ignore"):
        bits = ones / total * 255 > 127  # the package's mean score * 255 > 127: a majority of the blocks
    return np.packbits(bits).tobytes()


def put_watermark(image: Image.Image, mark: bytes) -> Image.Image:
    """A PIL image -> a marked copy (RGB, or RGBA with its alpha kept), its `info` kept and its
    `parameters` text (if any) saying so: ", Watermark: <bytes>" on its last line. An image too
    small for the mark comes back unchanged, its parameters saying "Watermark: none (under 256x256
    pixels)"; `fits` tells which."""
    if fits(*image.size):
        marked = Image.fromarray(encode(np.asarray(image.convert("RGB")), mark))
        if "A" in image.getbands():  # the mark lives in the colours; an alpha channel is kept as it was
            marked.putalpha(image.getchannel("A"))
        field = f"Watermark: {describe(mark)}"
    else:
        marked, field = image.copy(), "Watermark: none (under 256x256 pixels)"
    marked.info.update(image.info)
    if "parameters" in image.info:
        marked.info["parameters"] = f"{image.info['parameters']}, {field}"
    return marked


def read_watermark(image: Image.Image, length: int) -> bytes:
    """The `length` bytes a PIL image's mark carries (garbage if it carries none: compare them to
    the bytes you expect, or use `find_mark`)."""
    return decode(np.asarray(image.convert("RGB")), length)


def find_mark(image: Image.Image) -> bytes | None:
    """Which of MARKS the image carries, read back exactly; None if none of them."""
    if not fits(*image.size):
        return None
    rgb = np.asarray(image.convert("RGB"))
    for mark in dict.fromkeys(MARKS.values()):
        if decode(rgb, len(mark)) == mark:
            return mark
    return None


def describe(mark: bytes) -> str:
    """The bytes as text when they are printable ASCII without a comma (all of MARKS; a comma would
    split the parameters text's field), else as hex: "0xc1003aee"."""
    readable = mark and all(0x20 <= byte < 0x7F for byte in mark) and b"," not in mark
    return mark.decode("ascii") if readable else "0x" + mark.hex()
