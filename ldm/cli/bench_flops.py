"""What `python -m ldm bench` divides by: the FLOPs of each stage of a txt2img, and this machine's
measured matmul peak, so that a stage's rate reads as a share of what the hardware does at best."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..pipeline import StableDiffusion


def counted(run) -> int:
    """The FLOPs of run() as torch's FlopCounterMode counts them: matmuls, convolutions and
    attention, a multiply-add as 2; elementwise work (norms, activations) is not counted."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run()
    return counter.get_total_flops()


def stage_flops(sd: StableDiffusion, batch: int, latent_size: tuple[int, int], steps: int,
                guided: bool) -> dict[str, int]:
    """The FLOPs of bench's stages for `batch` images of latent_size (h, w), `steps` UNet steps.

    Counted on a copy of the model on the meta device: shapes only, no memory, no time; and there
    attention is the matmuls of its formula, which FlopCounterMode counts (on the CPU torch runs a
    fused attention kernel that it does not count). The text encoder's check of its token ids
    (values, which a meta tensor does not have) is skipped on that copy. txt2img encodes the
    prompts and, with guidance, the negative prompts too (ldm/tasks/common.py guidance_contexts),
    and runs the UNet on both halves at once (samplers/guidance.py): that is what its stage
    counts. The decode is counted untiled: the useful work, which a tiled decode exceeds by its
    overlaps."""
    with torch.device("meta"):
        shapes = StableDiffusion(sd.config)
    shapes.text_encoder.check_tokens = lambda tokens: None
    unet_batch = 2 * batch if guided else batch
    h, w = latent_size
    config = sd.config
    text = counted(lambda: shapes.text_encoder(
        torch.zeros(batch, config.text_encoder.context_length, dtype=torch.long, device="meta")))
    unet = counted(lambda: shapes.unet(
        torch.empty(unet_batch, config.unet.in_channels, h, w, device="meta"),
        torch.zeros(unet_batch, dtype=torch.long, device="meta"),
        torch.empty(unet_batch, config.text_encoder.context_length, config.unet.context_dim, device="meta")))
    decode = counted(lambda: shapes.vae.decode(torch.empty(batch, config.latent_channels, h, w, device="meta")))
    return {"text encoder": text, "sampling": steps * unet + (2 if guided else 1) * text, "VAE decode": decode}


# (M, K, N) of the products timed for the peak, smallest first: the UNet's own shapes (64x64 latent
# tokens through a 320 -> 1280 projection; 32x32 through 640 -> 2560) and square ones, each as
# nn.Linear multiplies: x [M, K] by a weight stored [N, K], transposed. On a CPU without bfloat16
# instructions torch's bfloat16 products are emulated, and how slowly depends on the layout
# (measured here, 1024 square: 19 GFLOP/s with the weight stored [N, K], 0.9 stored [K, N]).
PEAK_SHAPES = ((4096, 320, 1280), (1024, 640, 2560), (1024, 1024, 1024), (2048, 2048, 2048))


def matmul_peak(dtype: torch.dtype, device: torch.device | str = "cpu", repeats: int = 3) -> float:
    """GFLOP/s of the fastest [M, K] @ [N, K]^T product of PEAK_SHAPES in dtype on device (best of
    `repeats` each), with torch's current threads: the rate the stages' rates are a share of. A
    shape whose first product takes over a second is timed once and ends the search."""
    g = torch.Generator().manual_seed(0)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    best_rate = 0.0
    for m, k, n in PEAK_SHAPES:
        a = torch.randn(m, k, generator=g).to(device=device, dtype=dtype)
        weight = torch.randn(n, k, generator=g).to(device=device, dtype=dtype)
        times = []
        for i in range(repeats + 1):  # the first product pays for the kernels' set-up
            start = time.perf_counter()
            a @ weight.T
            sync()
            times.append(time.perf_counter() - start)
            if times[0] > 1.0:
                break
        best_rate = max(best_rate, 2 * m * k * n / min(times[1:] or times) / 1e9)
        if times[0] > 1.0:
            break
    return best_rate
