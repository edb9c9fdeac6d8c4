"""Runs inside a subprocess whose PYTHONPATH starts with the unpacked ORIGINAL `ldm` package
(stable-diffusion-sdkit 2.1.5). It must never import this project's packages.

    python run_original.py JOB.json

JOB.json: {"component": ..., "params": {...}, "seed": int, "inputs": path, "outputs": path,
"state_dict": path}. Builds the original module, gives EVERY parameter and buffer random values
(the original zero-initialises output layers, so a fresh model outputs exact zeros and would prove
nothing), runs it on the inputs, and writes the state dict (original key names) and the outputs as
safetensors files.
"""

import json
import math
import sys

import torch
from safetensors.torch import load_file, save_file


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Weights ~ N(0, 1/fan_in); norm scales ~ 1 + N(0, 0.1^2); every other vector ~ N(0, 0.1^2)."""
    generator = torch.Generator().manual_seed(seed)
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.BatchNorm2d)
    norm_scales = {f"{name}.weight" if name else "weight" for name, m in module.named_modules()
                   if isinstance(m, norms)}
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
            if name in norm_scales:
                value = 1 + 0.1 * noise
            elif tensor.ndim >= 2:
                value = noise / math.sqrt(math.prod(tensor.shape[1:]))
            else:
                value = 0.1 * noise
            tensor.copy_(value.to(tensor.dtype))


def build_unet(params, inputs):
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(**params).eval()
    def run():
        return {"out": unet(inputs["x"], inputs["t"], context=inputs["context"], y=inputs.get("y"))}
    return unet, run


def build_autoencoder(params, inputs):
    from ldm.modules.diffusionmodules.model import Decoder, Encoder
    from ldm.modules.distributions.distributions import DiagonalGaussianDistribution

    # The original AutoencoderKL (ldm.models.autoencoder) imports pytorch_lightning; its inference
    # path is exactly these four modules, assembled here under the same attribute names.
    ddconfig, embed_dim = params["ddconfig"], params["embed_dim"]
    vae = torch.nn.Module()
    vae.encoder = Encoder(**ddconfig)
    vae.decoder = Decoder(**ddconfig)
    vae.quant_conv = torch.nn.Conv2d(2 * ddconfig["z_channels"], 2 * embed_dim, 1)
    vae.post_quant_conv = torch.nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)
    vae.eval()

    def run():
        posterior = DiagonalGaussianDistribution(vae.quant_conv(vae.encoder(inputs["image"])))
        decoded = vae.decoder(vae.post_quant_conv(inputs["z"]))
        return {"mean": posterior.mean, "logvar": posterior.logvar, "std": posterior.std, "decoded": decoded}
    return vae, run


BUILDERS = {"unet": build_unet, "autoencoder": build_autoencoder}


def main(job_path: str) -> None:
    import ldm

    job = json.load(open(job_path))
    if not ldm.__file__.startswith(job["original_root"]):
        raise SystemExit(f"imported the wrong `ldm` ({ldm.__file__}); expected the original under {job['original_root']}")
    torch.set_num_threads(job.get("threads", torch.get_num_threads()))
    inputs = load_file(job["inputs"])
    # Built on the meta device (no memory, no init), then given storage and random values: the
    # original's own initialisation would be overwritten anyway.
    with torch.device("meta"):
        module, run = BUILDERS[job["component"]](job["params"], inputs)
    module.to_empty(device="cpu")
    randomise(module, job["seed"])
    with torch.no_grad():
        outputs = run()
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    save_file(state, job["state_dict"])
    save_file({k: v.contiguous() for k, v in outputs.items()}, job["outputs"])


if __name__ == "__main__":
    main(sys.argv[1])
