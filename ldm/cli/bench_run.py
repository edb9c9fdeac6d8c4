"""One row of `python -m ldm bench`: one implementation (ours, or diffusers' StableDiffusionPipeline)
in one mode, the wall time of each stage of a txt2img and the process's peak RSS after it.

    python -m ldm.cli.bench_run '{"impl": "diffusers", "mode": "bf16", ...}'   -> one JSON line

`bench --against diffusers` runs every row in a process of its own: a process's peak RSS is all it
ever held, so two rows in one process would share theirs. Without --against, bench measures its
one row with measure_ours in the command's own process.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch

PROMPT = "a photograph of an astronaut riding a horse"

# mode -> (the networks' compute dtype, low memory). low-memory: ours is enable_low_memory (weights
# stored in bfloat16, computed in float32; VAE in tiles; feed-forwards in chunks); diffusers' is its
# own switches of the same names: enable_layerwise_casting (bfloat16 -> float32) on the UNet and the
# VAE, the VAE's enable_tiling. Its text encoder (transformers' CLIPTextModel) stays float32:
# diffusers' apply_layerwise_casting breaks it ("mat1 and mat2 must have the same dtype", 0.42.1),
# and its UNet2DConditionModel has no feed-forward chunking.
MODES = {"fp32": ("float32", False), "fp16": ("float16", False), "bf16": ("bfloat16", False),
         "low-memory": ("float32", True)}


def peak_rss_gib() -> float:
    """This process's peak resident memory so far: Linux's VmHWM (/proc/self/status), the
    high-water mark of this program's own memory. Not ru_maxrss, which on Linux keeps the parent's
    peak across fork and exec: run from a test process holding 10 GB, a row reported 10 GB.
    Elsewhere ru_maxrss (bytes on macOS)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


class Stages:
    """Wall time of each stage since the previous one ended, and the peak RSS at its end (on CUDA
    also the peak of memory torch allocated on the GPU, torch.cuda.max_memory_allocated)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.rows: list[dict] = []
        self.start = time.perf_counter()

    def end(self, name: str) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        row = {"stage": name, "seconds": now - self.start, "peak_rss_gib": peak_rss_gib()}
        if self.cuda:
            row["peak_vram_gib"] = torch.cuda.max_memory_allocated() / 2**30
        self.rows.append(row)
        self.start = time.perf_counter()


def sampling_stage(steps: int) -> str:
    return f"txt2img to the latent ({steps} steps)"


def measure_ours(spec: dict) -> dict:
    """Load --ckpt as the command line does, encode the prompts, sample to the latent (the text
    encoder again inside: txt2img encodes its prompts), decode as txt2img's output does (tiled in
    low-memory mode); then count each stage's FLOPs (bench_flops.py, after the clock stops)."""
    from ..tasks.common import finish
    from .bench_flops import stage_flops
    from .common import load_model, requested_device

    dtype, low_memory = MODES[spec["mode"]]
    dtype = spec.get("dtype", dtype)  # bench without --against: its --dtype, None for the device's default
    args = argparse.Namespace(ckpt=spec["ckpt"], variant=spec["variant"], device=spec["device"], dtype=dtype,
                              low_memory=low_memory, offload=spec.get("offload", False))
    stages = Stages(requested_device(args))
    sd = load_model(args)
    sd.tokenizer([""])  # it reads its vocabulary on first use; diffusers' from_pretrained loads its tokenizer
    stages.end("load checkpoint")
    prompts, steps_seen = [PROMPT] * spec["batch"], []
    with torch.no_grad():
        sd.text_encoder(sd.tokenizer(prompts).to(sd.device))
        stages.end("text encoder")
        latent = sd.txt2img(prompts, steps=spec["steps"], guidance_scale=spec["scale"], height=spec["height"],
                            width=spec["width"], seed=0, output="latent", progress=False,
                            callback=lambda i, t, x, p: steps_seen.append(t))
        stages.end(sampling_stage(len(steps_seen)))
        finish(sd, latent, "tensor", prompts=prompts, seeds=[0] * len(prompts))
        stages.end("VAE decode")
    flops = stage_flops(sd, spec["batch"], tuple(latent.shape[2:]), len(steps_seen), spec["scale"] != 1.0)
    flops[sampling_stage(len(steps_seen))] = flops.pop("sampling")
    f = sd.config.autoencoder.downsampling_factor
    return {"impl": "ours", "mode": spec["mode"], "variant": sd.variant, "device": str(sd.device),
            "dtype": str(sd.dtype), "threads": torch.get_num_threads(), "steps": len(steps_seen),
            "size": [latent.shape[3] * f, latent.shape[2] * f], "stages": stages.rows, "flops": flops}


def measure_diffusers(spec: dict) -> dict:
    """The same run through diffusers: StableDiffusionPipeline.from_pretrained of the diffusers
    folder (no safety checker), DDIMScheduler, the same prompts, steps, guidance and size; its
    encode_prompt, its __call__ to the latent (which encodes again, as ours), its VAE decode."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    dtype, low_memory = MODES[spec["mode"]]
    device = torch.device(spec["device"] or "cpu")
    stages = Stages(device)
    pipe = StableDiffusionPipeline.from_pretrained(spec["diffusers_folder"], torch_dtype=getattr(torch, dtype),
                                                   safety_checker=None, requires_safety_checker=False,
                                                   local_files_only=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    if low_memory:
        for model in (pipe.unet, pipe.vae):
            model.enable_layerwise_casting(storage_dtype=torch.bfloat16, compute_dtype=torch.float32)
        pipe.vae.enable_tiling()
    pipe.to(device)
    stages.end("load checkpoint")
    prompts, steps_seen = [PROMPT] * spec["batch"], []

    def count(pipeline, i, t, tensors):
        steps_seen.append(t)
        return tensors

    with torch.no_grad():
        pipe.encode_prompt(prompts, device, 1, False)
        stages.end("text encoder")
        latent = pipe(prompts, num_inference_steps=spec["steps"], guidance_scale=spec["scale"],
                      height=spec["height"], width=spec["width"], generator=torch.Generator().manual_seed(0),
                      output_type="latent", callback_on_step_end=count).images
        stages.end(sampling_stage(len(steps_seen)))
        pipe.vae.decode(latent / pipe.vae.config.scaling_factor)
        stages.end("VAE decode")
    return {"impl": "diffusers", "mode": spec["mode"], "device": str(device), "dtype": str(pipe.unet.dtype),
            "threads": torch.get_num_threads(), "steps": len(steps_seen), "stages": stages.rows}


def main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    torch.set_num_threads(spec["threads"])
    measure = measure_ours if spec["impl"] == "ours" else measure_diffusers
    print(json.dumps(measure(spec)))


if __name__ == "__main__":
    main(sys.argv[1])
