"""Write our weights back in the ORIGINAL single-file layout, loadable by the original code.

The keys are the inverse of the load tables (v1 text encoder with the `text_model.` level), plus
the schedule buffers the original LatentDiffusion registers (float32, computed the original way in
float64 first), so the original's `load_state_dict` finds what it expects. Files are written atomically (a
temporary name, then a link that never replaces a file): see link_new_file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from ldm.config import PRESETS, ModelConfig, ScheduleConfig
from samplers.schedule import NoiseSchedule

from . import layout

T = TypeVar("T")


def schedule_buffers(s: ScheduleConfig) -> dict[str, torch.Tensor]:
    """The DDPM buffers of the original `register_schedule` (ddpm.py), v_posterior = 0."""
    schedule = NoiseSchedule.linear(s.num_timesteps, s.linear_start, s.linear_end)
    betas, alphas_cumprod = schedule.betas, schedule.alphas_cumprod
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    posterior_variance = betas * (1 - previous) / (1 - alphas_cumprod)
    buffers = {
        "betas": betas, "alphas_cumprod": alphas_cumprod, "alphas_cumprod_prev": previous,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(), "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1 - alphas_cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1 / alphas_cumprod - 1).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * previous.sqrt() / (1 - alphas_cumprod),
        "posterior_mean_coef2": (1 - previous) * (1 - betas).sqrt() / (1 - alphas_cumprod),
    }
    return {k: v.float() for k, v in buffers.items()}


def to_original(config: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our `StableDiffusion` state dict -> the original checkpoint's keys (plus schedule buffers)."""
    table, _ = layout.original_to_ours(config)
    ours_to_original = {ours: original for original, ours in table.items()}
    missing = [k for k in ours_to_original if k not in state]
    extra = [k for k in state if k not in ours_to_original]
    if missing or extra:
        raise KeyError(f"cannot write the {config.name} layout: missing {missing[:10]}, unknown {extra[:10]}")
    original = {ours_to_original[k]: v.detach().contiguous() for k, v in state.items()}
    if config.scale_factor != PRESETS[config.name].scale_factor:
        # A latent scale the preset does not know (a re-trained demo model): stored the way the
        # original's LatentDiffusion(scale_by_std=True) stores it, as the `scale_factor` buffer.
        original["scale_factor"] = torch.tensor(config.scale_factor, dtype=torch.float32)
    original |= schedule_buffers(config.schedule)
    if config.noise_augmentation is not None:  # the upscaler's low_scale_model registers the first 8 of its own
        low_scale = schedule_buffers(config.noise_augmentation.schedule)
        original |= {f"low_scale_model.{name}": low_scale[name] for name in layout.SCHEDULE_BUFFERS[:8]}
    return original


CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")


def write_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor],
                     metadata: dict[str, str] | None = None) -> Path:
    """`.safetensors` -> safetensors; `.ckpt` / `.pt` / `.pth` -> torch zip pickle {"state_dict": ...}.
    An existing file is never overwritten. `metadata` (str -> str) goes into the safetensors header
    (into the pickle beside the state dict for `.ckpt`).

    Atomic: the file is written under a temporary name in the same folder, flushed to disk, and only
    then linked to `path`; a full disk, an exception or Ctrl-C leaves nothing at `path` (and the
    temporary file is removed), and of two writers racing for one name exactly one wins, the other
    gets FileExistsError."""
    path = check_new_file(path)
    tensors = {k: v.cpu() for k, v in tensors.items()}

    def write(partial: str) -> None:
        if path.suffix == ".safetensors":
            save_safetensors(own_storage(tensors), partial, metadata)
        else:
            torch.save({"state_dict": tensors} | ({"metadata": metadata} if metadata else {}), partial)

    return link_new_file(path, write)


def check_new_file(path: str | Path) -> Path:
    """A checkpoint file to write: a known extension, no file of that name, its folder present."""
    path = Path(path)
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(f"{path}: unknown checkpoint extension {path.suffix!r}; use .safetensors or .ckpt")
    if path.exists():
        raise FileExistsError(f"{path} exists; choose another name (files are never overwritten)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the folder {path.parent} does not exist")
    return path


def own_storage(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor contiguous and in memory of its own: safetensors refuses views of one storage,
    which a .ckpt may hold (torch.save keeps tied or sliced tensors shared). Copies only those."""
    seen, result = set(), {}
    for key, tensor in tensors.items():
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen or not tensor.is_contiguous():
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        seen.add(tensor.untyped_storage().data_ptr())
        result[key] = tensor
    return result


def link_new_file(path: Path, write: Callable[[str], None]) -> Path:
    """Create `path` with what `write(temporary_name)` writes, all or nothing, never over a file.

    The temporary file sits beside `path` (a link cannot cross file systems) and is created the way
    any new file is, mode 0666 for the kernel to take the umask from (not mkstemp's private 0600),
    so the checkpoint gets the permissions the user's other files get. os.link, unlike os.rename,
    fails when the name exists: the last step is a test-and-create that exactly one writer wins.
    (ldm/outputs.py writes PNGs the same way; checkpoints_convert may not import ldm.)"""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    partial, fd = new_partial(path, lambda name: os.open(name, flags, 0o666))
    try:
        try:
            mode = os.fstat(fd).st_mode & 0o7777  # what the umask left of 0666
        finally:
            os.close(fd)
        with writing(path):
            write(str(partial))
        os.chmod(partial, mode)  # a writer may have replaced the file (see save_safetensors)
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)  # on disk before the name points at it: a crash never leaves a named stub
        finally:
            os.close(fd)
        try:
            os.link(partial, path)
        except FileExistsError:
            raise FileExistsError(f"{path} exists (written meanwhile by another writer); choose another name "
                                  "(files are never overwritten)") from None
    finally:
        os.unlink(partial)
    return path


@contextlib.contextmanager
def writing(path: Path):
    """A write that fails raises OSError naming `path`: the writers report a full disk in their own
    types (safetensors' SafetensorError "I/O error", torch's RuntimeError "unexpected pos")."""
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as error:
        raise OSError(f"{path}: writing failed, nothing was left behind ({type(error).__name__}: "
                      f"{str(error)[:300]})") from error


def save_safetensors(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file, the file keeping the permissions any new file gets (0666 less the
    umask): save_file (safetensors 0.8) writes a private temporary file (0600) and renames it over
    `path`, so `path` is created first, the usual way, and its mode put back afterwards."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        mode = os.fstat(fd).st_mode & 0o7777
    finally:
        os.close(fd)
    save_file(tensors, path, metadata=metadata)
    os.chmod(path, mode)


def new_partial(path: Path, create: Callable[[Path], T]) -> tuple[Path, T]:
    """A fresh hidden name beside `path`, `.NAME.partial-<random>`, made by `create` (an exclusive
    create: os.mkdir, or os.open with O_EXCL), which is tried again if the name is taken."""
    while True:
        partial = path.with_name(f".{path.name}.partial-{secrets.token_hex(6)}")
        try:
            return partial, create(partial)
        except FileExistsError:
            continue
