"""The low-memory switches (ldm/memory.py): each computes what it claims, on models whose every
tensor is random (tests/reference/run_original.py's randomise), or on the demo model's trained VAE
where the claim is about images."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

from ldm import memory
from ldm.config import DEMO
from ldm.modules.attention import FeedForward
from ldm.pipeline import StableDiffusion
from ldm.tasks.common import finish, posterior_sample
from tests.reference.random_weights import randomise

from .tiny_models import TINY_DEPTH, tiny_command


@pytest.fixture(autouse=True)
def allocator_untouched(monkeypatch) -> list[bool]:
    """enable_low_memory changes glibc's allocator for the whole process (memory.return_freed_memory);
    here it is recorded instead, so that the rest of the test run keeps the default allocator. The
    command-line test runs the real one, in its own process."""
    calls: list[bool] = []
    monkeypatch.setattr(memory, "return_freed_memory", lambda: calls.append(True) or True)
    return calls


@pytest.fixture(scope="module")
def random_sd() -> StableDiffusion:
    sd = StableDiffusion(DEMO).eval()
    randomise(sd, seed=5)
    return sd


def rounded_to_bfloat16(sd: StableDiffusion) -> StableDiffusion:
    """A float32 copy of sd whose every weight is rounded to the nearest bfloat16 value."""
    rounded = copy.deepcopy(sd)
    with torch.no_grad():
        for tensor in rounded.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.bfloat16().float())
    return rounded


def latent_and_images(sd: StableDiffusion) -> tuple[torch.Tensor, torch.Tensor]:
    latent = sd.txt2img("a red circle", steps=3, seed=7, height=64, width=64, output="latent", progress=False)
    images = finish(sd, latent, "tensor", prompts=["a red circle"], seeds=[7])
    return latent, images


def test_layerwise_casting_is_the_float32_run_of_the_weights_rounded_to_bfloat16(random_sd):
    """Stored in bfloat16, computed in float32: bit for bit the float32 model whose weights were
    rounded to bfloat16, and its weights take half the memory."""
    rounded, cast = rounded_to_bfloat16(random_sd), copy.deepcopy(random_sd)
    for network in memory.networks(cast).values():
        memory.enable_layerwise_casting(network, torch.bfloat16)
    expected, got = latent_and_images(rounded), latent_and_images(cast)
    assert cast.dtype == torch.float32 and expected[0].abs().max() > 0.1 and expected[1].std() > 0.01
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
    # between calls every weight is stored in bfloat16, except the few beside a layer (position embeddings)
    stored = [t for t in cast.state_dict().values() if t.is_floating_point()]
    in_bf16 = sum(t.numel() for t in stored if t.dtype == torch.bfloat16)
    assert in_bf16 / sum(t.numel() for t in stored) > 0.98
    assert sum(t.nbytes for t in stored) < 0.51 * sum(t.nbytes for t in rounded.state_dict().values())


def test_layerwise_casting_reaches_midas_too():
    """The depth model's MiDaS (its weight-standardised convolutions cast their weights in forward)."""
    torch.manual_seed(0)
    sd = StableDiffusion(TINY_DEPTH).eval()
    randomise(sd, seed=6)
    rounded, cast = rounded_to_bfloat16(sd), copy.deepcopy(sd)
    cast.enable_low_memory()
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    expected = rounded.estimate_depth(image)
    stored = list(cast.depth_model.parameters())
    in_bf16 = sum(p.numel() for p in stored if p.dtype == torch.bfloat16) / sum(p.numel() for p in stored)
    assert in_bf16 > 0.9 and expected.std() > 1e-3
    assert torch.equal(cast.estimate_depth(image), expected)


def test_from_checkpoint_low_memory_reads_the_weights_into_bfloat16_and_runs_as_the_switches_turned_on_later(
        random_sd, tmp_path, allocator_untouched):
    path = random_sd.save_checkpoint(tmp_path / "random.safetensors")
    low = StableDiffusion.from_checkpoint(path, device="cpu", low_memory=True)
    later = StableDiffusion.from_checkpoint(path, device="cpu")
    later.enable_low_memory()
    assert allocator_untouched == [True, True]
    assert low.dtype == torch.float32 and low.vae_tile == memory.VAE_TILE
    assert next(low.unet.parameters()).dtype == torch.bfloat16
    for a, b in zip(latent_and_images(low), latent_and_images(later)):
        assert torch.equal(a, b)


def test_feed_forward_chunks_compute_the_same_function(random_sd):
    ff = next(m for m in random_sd.unet.modules() if isinstance(m, FeedForward))
    x = torch.randn(2, 300, ff.geglu_proj.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = ff(x)
        ff.chunk_size = 64  # 300 = 4 x 64 + 44
        try:
            chunked = ff(x)
        finally:
            ff.chunk_size = None
    assert whole.abs().max() > 0.1
    # the same rows through the same matrices; only the matrix product's blocking may differ
    assert (chunked - whole).abs().max() <= 1e-5 * whole.abs().max()


def test_attention_slicing_reaches_the_vae_and_computes_the_same_attention(random_sd):
    sd = copy.deepcopy(random_sd)
    latent = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = sd.vae.decode(latent)
        sd.enable_attention_slicing(100)  # 256 queries in the VAE's middle block: 100 + 100 + 56
        assert {m.mode for m in sd.vae.modules() if hasattr(m, "slice_size")} == {"sliced"}
        sliced = sd.vae.decode(latent)
        sd.enable_attention_slicing(None)
        assert {m.mode for m in sd.modules() if hasattr(m, "slice_size")} == {"sdpa"}
    assert whole.std() > 0.01
    assert (sliced - whole).abs().max() <= 1e-5 * whole.abs().max()


# Tiled against whole, on the demo model's TRAINED VAE (random weights decode noise, which would hide
# a seam) and a smooth 192x192 picture: its latent is 48x48, in windows of 32 latent pixels (2 x 2
# windows overlapping by 16). A window is not the whole run: its GroupNorms normalise with the
# window's statistics, its middle block attends within the window, so the colours of a window drift
# from the whole decode's, and the blend spreads the drift instead of cutting it (memory.py).
# Measured: decode |tiled - whole| mean 0.055, 99th percentile 0.22, max 0.996 (one corner pixel),
# in [0, 1] pixel units; encode max 0.15 of the latent's largest value. The demo VAE reconstructs
# this picture poorly (mean error 0.28): a toy VAE, out of its shapes; SD's VAE was not measured.
DECODE_MEAN, DECODE_P99, ENCODE_BOUND = 0.07, 0.3, 0.2


@pytest.fixture(scope="module")
def demo() -> StableDiffusion:
    return StableDiffusion.demo(device="cpu")


def smooth_picture(size: int = 192) -> torch.Tensor:
    """[1, 3, size, size] in [-1, 1]: colour gradients and a disc, as the demo model's shapes."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    disc = ((x - 0.2) ** 2 + (y + 0.1) ** 2 < 0.25).float()
    return torch.stack([x * 0.6, y * 0.6, disc * 1.6 - 0.8])[None].clamp(-1, 1)


def test_tiled_vae_decode_and_encode_stay_within_the_stated_bound_of_the_whole_run(demo):
    picture = smooth_picture()
    generators = [torch.Generator().manual_seed(0)]
    with torch.no_grad():
        latent = posterior_sample(demo, picture, generators)
        whole = finish(demo, latent, "tensor", prompts=["x"], seeds=[0])
        demo.enable_vae_tiling(32)
        try:
            tiled_image = finish(demo, latent, "tensor", prompts=["x"], seeds=[0])
            tiled_latent = posterior_sample(demo, picture, [torch.Generator().manual_seed(0)])
        finally:
            demo.enable_vae_tiling(None)
    error = (tiled_image - whole).abs()
    mean, p99 = error.mean().item(), error.flatten().quantile(0.99).item()
    encode_error = ((tiled_latent - latent).abs().max() / latent.abs().max()).item()
    print(f"decode mean {mean:.4f}, 99th percentile {p99:.4f}, max {error.max():.4f}; "
          f"encode max {encode_error:.4f} of the latent's largest value")
    assert whole.std() > 0.1 and latent.abs().max() > 0.5
    assert 0 < mean <= DECODE_MEAN and p99 <= DECODE_P99 and 0 < encode_error <= ENCODE_BOUND


def test_one_window_covering_the_image_is_the_whole_run_bit_for_bit(demo):
    picture = smooth_picture(64)
    with torch.no_grad():
        latent = posterior_sample(demo, picture, [torch.Generator().manual_seed(0)])
        whole = finish(demo, latent, "tensor", prompts=["x"], seeds=[0])
        demo.enable_vae_tiling(16)  # the latent is 16x16
        try:
            assert torch.equal(posterior_sample(demo, picture, [torch.Generator().manual_seed(0)]), latent)
            assert torch.equal(finish(demo, latent, "tensor", prompts=["x"], seeds=[0]), whole)
        finally:
            demo.enable_vae_tiling(None)


def test_the_allocator_setting_takes_on_glibc():
    """return_freed_memory in a process of its own (it changes the allocator for good): True on this
    project's Linux (glibc) machines."""
    import subprocess
    import sys

    from .tiny_models import ROOT

    script = "from ldm.memory import return_freed_memory; print(return_freed_memory())"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "True", result.stderr[-1000:]


@pytest.mark.parametrize("call, words", [
    (lambda sd: sd.enable_vae_tiling(4), "tile=4: must be None or an int >= 8"),
    (lambda sd: sd.enable_vae_tiling(True), "tile=True"),
    (lambda sd: sd.enable_attention_slicing(0), "slice_size=0: must be None or a positive int"),
    (lambda sd: sd.enable_forward_chunking("64"), "chunk_size='64'"),
    (lambda sd: [sd.enable_low_memory(), sd.enable_low_memory()], "enable layerwise casting once"),
], ids=["small-tile", "bool-tile", "zero-slice", "str-chunk", "twice"])
def test_bad_settings_are_refused_by_name(call, words):
    sd = StableDiffusion(DEMO).eval()
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        call(sd)


def test_the_command_line_low_memory_flag_writes_what_the_library_makes(random_sd, tmp_path, monkeypatch):
    result = tiny_command(random_sd, tmp_path, monkeypatch, "txt2img", "--prompt", "a red circle", "--low_memory",
                          "--H", "64", "--W", "64", "--ddim_steps", "3", "--seed", "7", "--n_samples", "1",
                          "--n_iter", "1", "--outdir", "out", "--skip_grid")
    assert result.returncode == 0, result.stderr[-2000:]
    written = sorted((tmp_path / "out" / "samples").glob("*.png"))
    low = copy.deepcopy(random_sd)
    low.enable_low_memory()  # the allocator setting changes where memory lives, never a number
    expected = low.txt2img("a red circle", steps=3, seed=7, height=64, width=64, progress=False)[0]
    assert len(written) == 1 and Image.open(written[0]).tobytes() == expected.tobytes()


# -- sequential placement (enable_model_cpu_offload) --------------------------------------------------

def test_offloading_places_each_network_on_the_device_only_while_it_runs(random_sd, monkeypatch):
    """No accelerator here: the hooks are installed with the CPU standing for the device, and the
    moves are recorded instead of made (a move to the device passes the very device object given)."""
    sd, device = copy.deepcopy(random_sd), torch.device("cpu")
    names = {id(network): name for name, network in memory.networks(sd).items()}
    moves: list[tuple[str, str]] = []
    monkeypatch.setattr(memory, "_move", lambda network, to: moves.append(
        (names[id(network)], "device" if to is device else "cpu")))
    memory._install_offload(sd, device)
    assert moves == [("unet", "cpu"), ("vae", "cpu"), ("text_encoder", "cpu")] and sd.device is device
    running: list[tuple[str, str]] = []  # each network as it runs, and the last network moved to the device
    for name, network in memory.networks(sd).items():
        for module in (network, *network.children()):
            module.register_forward_pre_hook(lambda module, args, name=name: running.append(
                (name, [n for n, to in moves if to == "device"][-1])))
    moves.clear()
    offloaded = sd.txt2img("a red circle", steps=2, seed=3, output="tensor", progress=False)
    assert moves == [("text_encoder", "device"), ("text_encoder", "cpu"), ("unet", "device"),
                     ("unet", "cpu"), ("vae", "device")]
    assert running and all(name == placed for name, placed in running)
    plain = random_sd.txt2img("a red circle", steps=2, seed=3, output="tensor", progress=False)
    assert plain.std() > 0.01 and torch.equal(offloaded, plain)


def test_offloading_to_the_cpu_or_twice_is_refused(random_sd, monkeypatch):
    sd = copy.deepcopy(random_sd)
    with pytest.raises(ValueError, match=r"enable_model_cpu_offload\(device='cpu'\): it moves each network to an "
                                         r"accelerator \(cuda, mps\) only while it runs"):
        sd.enable_model_cpu_offload("cpu")
    monkeypatch.setattr(memory, "_move", lambda network, to: None)
    memory._install_offload(sd, torch.device("cuda"))
    with pytest.raises(ValueError, match="the model already offloads to cuda; enable offloading once"):
        sd.enable_model_cpu_offload("cuda")
