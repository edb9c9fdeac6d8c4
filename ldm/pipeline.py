"""StableDiffusion: the four networks of one variant, its tokenizer and its noise schedule.

    sd = StableDiffusion.from_checkpoint("v1-5-pruned-emaonly.safetensors")
    sd.unet, sd.vae, sd.text_encoder, sd.tokenizer, sd.schedule, sd.config

Loading goes through checkpoints_convert (safe reading, the key tables, variant rules); the
modules are built on the meta device and take the file's tensors as their parameters, so no
memory or time is spent on an initialisation that would be overwritten.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
from torch import nn

from checkpoints_convert import diffusers
from checkpoints_convert.detect import probe_v_prediction
from checkpoints_convert.load import read_original
from checkpoints_convert.pages import FilePages, empty_huge
from checkpoints_convert.remap import load_state
from checkpoints_convert.save import to_original, write_checkpoint
from samplers.schedule import NoiseSchedule
from tokenizer import CLIPTokenizer

from . import memory
from .config import PRESETS, ModelConfig
from .modules.autoencoder import AutoencoderKL
from .modules.clip_text import CLIPTextEncoder
from .modules.midas import MiDaS
from .modules.openclip_text import OpenCLIPTextEncoder
from .modules.unet import UNet
from .outputs import file_hash
from .precision import dtype_of, warn_if_emulated
from .tasks.depth2img import depth2img, estimate_depth
from .tasks.img2img import img2img
from .tasks.inpaint import inpaint
from .tasks.upscale import upscale
from .tasks.txt2img import txt2img

log = logging.getLogger("ldm")


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(device: torch.device, dtype: torch.dtype | str | None) -> torch.dtype:
    """None: float16 on CUDA, float32 on CPU and MPS. float16 on the CPU is refused (slow, and
    several CPU kernels lack it); bfloat16 is allowed there."""
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
                 "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
        if dtype not in names:
            raise ValueError(f"dtype={dtype!r} is not one of {sorted(names)}")
        dtype = names[dtype]
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype={dtype} is not supported; use float32, float16 (CUDA/MPS) or bfloat16")
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("dtype=float16 is not supported on the CPU; use float32 or bfloat16 there")
    return dtype


class StableDiffusion(nn.Module):
    """One Stable Diffusion model. Its state dict holds `unet.*`, `vae.*` and `text_encoder.*`, and
    for the depth model `depth_model.*` (MiDaS) when its file carries it."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.variant = config.name
        self.unet = UNet(config.unet)
        self.vae = AutoencoderKL(config.autoencoder)
        encoder_class = CLIPTextEncoder if config.text_encoder.kind == "clip" else OpenCLIPTextEncoder
        self.text_encoder = encoder_class(config.text_encoder)
        self.depth_model = MiDaS(config.depth_model) if config.depth_model is not None else None
        s = config.schedule
        self.schedule = NoiseSchedule.linear(s.num_timesteps, s.linear_start, s.linear_end)
        self.source: Path | None = None  # the file or folder the weights came from
        self.vae_tile: int | None = None  # the VAE run in windows of this many latent pixels (memory.py)

    @property
    def model_name(self) -> str:
        """What the images' parameters call the model: the checkpoint's name, or the variant."""
        return self.source.stem if self.source is not None else self.variant

    @functools.cached_property
    def model_hash(self) -> str | None:
        """The first 10 hex digits of the checkpoint file's sha256 (None for a folder or no file)."""
        return file_hash(self.source) if self.source is not None and self.source.is_file() else None

    @functools.cached_property
    def tokenizer(self) -> CLIPTokenizer:
        """Built on first use (reading the merges takes ~70 ms, not needed to load weights)."""
        return CLIPTokenizer(pad_with=self.config.text_encoder.pad_with,
                             context_length=self.config.text_encoder.context_length,
                             flavour=self.config.text_encoder.tokenizer)

    @property
    def device(self) -> torch.device:
        """Where the networks compute: the UNet's weights' device, or the device they are moved to
        while they run (memory.enable_model_cpu_offload)."""
        return self.offload_device or next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the UNet computes in (its weights', unless they are stored in another: memory.py)."""
        return dtype_of(self.unet)

    @classmethod
    def from_checkpoint(cls, path: str | Path, variant: str | None = None, device: str | torch.device | None = None,
                        dtype: torch.dtype | str | None = None, use_ema: bool = False,
                        low_memory: bool = False) -> StableDiffusion:
        """Load an original single-file checkpoint (.ckpt or .safetensors, by its bytes).

        variant: "v1", "v2", "v2-v", "v2-inpainting", "v2-depth", "x4-upscaler"; None detects it
        (a yaml beside the file, then the weights; see checkpoints_convert/detect.py).
        dtype: what the networks compute in. low_memory: the switches of memory.enable_low_memory,
        the weights read straight into their bfloat16 storage (the load never holds them in float32).
        """
        device = torch.device(device) if device is not None else default_device()
        dtype = resolve_dtype(device, dtype)
        warn_if_emulated(device, dtype)
        storage = memory.storage_dtype(dtype) if low_memory else dtype
        checkpoint = read_original(path, variant, use_ema)
        config = checkpoint.config
        with torch.device("meta"):
            model = cls(config)
        # Copies, never views of the file: read_checkpoint maps it, and a mapped weight would change
        # (or kill the process, SIGBUS) when the file is rewritten or truncated after loading. The
        # file's pages under each copied tensor are handed back at once, so that the load's peak is
        # the model's size, not the model's plus the file's; on the CPU the copies are in huge pages,
        # which every UNet step reads faster (checkpoints_convert/pages.py).
        pages, state = FilePages(path), {}
        for key, tensor in checkpoint.state.items():
            kind = storage if tensor.is_floating_point() else tensor.dtype
            if device.type == "cpu":
                state[key] = empty_huge(tensor.shape, kind).copy_(tensor)
            else:
                state[key] = tensor.to(device=device, dtype=kind, copy=True)
            pages.release(tensor)
        load_state(model, state, f"{Path(path).name} ({config.name})", assign=True)
        model = model.to(device=device, dtype=storage).eval()
        model.source = Path(path)
        if low_memory:
            memory.enable_low_memory(model, compute_dtype=dtype)
        if checkpoint.needs_prediction_probe:
            is_v, score = probe_v_prediction(model.unet, config.unet.context_dim)
            if is_v:
                model._set_config(PRESETS["v2-v"])
            log.info("%s: %s by the probe: mean(out - x) = %.3f at t=999 (v when < -1)",
                     Path(path).name, model.variant, score)
        return model

    @classmethod
    def demo(cls, device: str | torch.device | None = None, dtype: torch.dtype | str | None = None,
             low_memory: bool = False) -> StableDiffusion:
        """The small model shipped with the package (trained on the shapes dataset, docs/demo-model.md),
        loaded like any original checkpoint: its variant, "demo", is detected from the weights."""
        from .demo import CHECKPOINT

        if not CHECKPOINT.is_file():
            raise FileNotFoundError(f"the bundled demo model {CHECKPOINT} is missing; re-install the package")
        return cls.from_checkpoint(CHECKPOINT, variant=None, device=device, dtype=dtype, low_memory=low_memory)

    # The tasks (ldm/tasks/, one file each) are the methods themselves: sd.txt2img(...) is
    # txt2img(sd, ...), with its signature (keyword-only after the prompt) and its docstring.
    txt2img = txt2img
    img2img = img2img
    inpaint = inpaint
    depth2img = depth2img
    estimate_depth = estimate_depth
    upscale = upscale

    # The low-memory switches (ldm/memory.py), named as diffusers names them.
    enable_vae_tiling = memory.enable_vae_tiling
    enable_attention_slicing = memory.enable_attention_slicing
    enable_forward_chunking = memory.enable_forward_chunking
    enable_low_memory = memory.enable_low_memory
    enable_model_cpu_offload = memory.enable_model_cpu_offload
    offload_device: torch.device | None = None  # set by enable_model_cpu_offload

    def _set_config(self, config: ModelConfig) -> None:
        self.config, self.variant = config, config.name
        self.__dict__.pop("tokenizer", None)  # v2 and v2-v share a tokenizer, but rebuild to be plain

    def save_checkpoint(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        """Write the original single-file layout: `.safetensors`, or `.ckpt` (a torch zip pickle)."""
        state = {k: v for k, v in self.state_dict().items()}
        return write_checkpoint(path, to_original(self.config, state), metadata)

    @classmethod
    def from_diffusers(cls, folder: str | Path, variant: str | None = None,
                       dtype: torch.dtype = torch.float32) -> StableDiffusion:
        """Read a diffusers pipeline folder (StableDiffusionPipeline's layout) into a model on the
        CPU, in `dtype`; the variant from the folder's configs unless given
        (checkpoints_convert/diffusers.py)."""
        warn_if_emulated(torch.device("cpu"), dtype)
        config = diffusers.folder_variant(folder, variant, dtype)
        with torch.device("meta"):
            model = cls(config)
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        state = diffusers.read_folder(folder, config, shapes, dtype)
        load_state(model, state, f"{folder} ({config.name})", assign=True)
        model.source = Path(folder)
        return model.eval()

    def save_diffusers(self, folder: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write a diffusers pipeline folder that StableDiffusionPipeline.from_pretrained loads
        (dtype: the stored float type; None: the model's). Never into a non-empty folder."""
        return diffusers.write_folder(self.config, self.state_dict(), folder, dtype or self.dtype)
