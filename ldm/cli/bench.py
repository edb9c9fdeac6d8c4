"""`python -m ldm bench`: the wall time of each stage of txt2img on this machine."""

from __future__ import annotations

import argparse
import time

import torch

from ..tasks.common import check_sampling, prompts_for
from .common import add_model_flags, check_model_flags, flag_errors, load_model


def add_parser(commands) -> None:
    parser = commands.add_parser("bench", help="time each stage of txt2img on this machine",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_flags(parser)
    parser.add_argument("--H", type=int, help="image height (default: the model's size)")
    parser.add_argument("--W", type=int, help="image width (default: the model's size)")
    parser.add_argument("--n_samples", type=int, default=1, help="batch size")
    parser.add_argument("--ddim_steps", type=int, default=10, help="sampling steps to time")
    parser.add_argument("--scale", type=float, default=7.5, help="guidance scale (1 halves the UNet batch)")


def run(args: argparse.Namespace) -> int:
    """Load, encode the prompt, sample, decode: the wall time of each stage, and UNet steps per second."""
    check_model_flags(args)
    with flag_errors():
        prompts_for("", args.n_samples)
        check_sampling(sampler="ddim", steps=args.ddim_steps, guidance_scale=args.scale, eta=None)
    sync = torch.cuda.synchronize if (args.device or "").startswith("cuda") else (lambda: None)
    start = time.perf_counter()
    sd = load_model(args)
    stages = {"load checkpoint": time.perf_counter() - start}
    prompts = ["a photograph of an astronaut riding a horse"] * args.n_samples
    steps_seen = []
    with torch.no_grad():
        start = time.perf_counter()
        sd.text_encoder(sd.tokenizer(prompts).to(sd.device))
        sync()
        stages["text encoder"] = time.perf_counter() - start
        start = time.perf_counter()
        with flag_errors():
            latent = sd.txt2img(prompts, steps=args.ddim_steps, guidance_scale=args.scale, height=args.H,
                                width=args.W, seed=0, output="latent", progress=False,
                                callback=lambda i, t, x, p: steps_seen.append(t))
        sync()
        sampling = f"txt2img to the latent ({len(steps_seen)} steps)"
        stages[sampling] = time.perf_counter() - start
        start = time.perf_counter()
        sd.vae.decode(latent / sd.config.scale_factor)
        sync()
        stages["VAE decode"] = time.perf_counter() - start
    f = sd.config.autoencoder.downsampling_factor
    print(f"{sd.variant} on {sd.device} ({sd.dtype}, {torch.get_num_threads()} CPU threads), batch {args.n_samples}, "
          f"{latent.shape[3] * f}x{latent.shape[2] * f}, guidance scale {args.scale}")
    for name, seconds in stages.items():
        print(f"  {name:<36} {seconds:8.3f} s")
    print(f"  {'sampling steps per second':<36} {len(steps_seen) / stages[sampling]:8.3f}")
    return 0
