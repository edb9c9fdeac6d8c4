"""Our weights <-> the diffusers folder layout, both ways, every stored tensor bit for bit.

State dicts in, state dicts out (our StableDiffusion's names); the whole model is the ldm side's:

    write_folder(config, state, "out/", dtype)    # -> a folder StableDiffusionPipeline loads
    config = folder_variant("out/")               # the variant, from the folder's configs
    state = read_folder("out/", config, shapes)   # -> our names (shapes: our model's, see not_stored)

    sd.save_diffusers("out/"), StableDiffusion.from_diffusers("out/")   # ldm/pipeline.py
    convert("v1-5.safetensors", "out/")                                  # ldm/convert.py, both ways

A diffusers pipeline folder holds one subfolder per component, each with its config.json:

| folder | what | written from |
| --- | --- | --- |
| `unet/` | UNet2DConditionModel: config.json, diffusion_pytorch_model.safetensors | keymap/diffusers_unet.py |
| `vae/` | AutoencoderKL: the same two files | keymap/diffusers_autoencoder.py |
| `text_encoder/` | transformers' CLIPTextModel: config.json, model.safetensors | keymap/diffusers_text.py |
| `tokenizer/` | CLIP BPE: vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json | tokenizer/ |
| `scheduler/` | scheduler_config.json: the original's training schedule | the variant's ScheduleConfig |
| `model_index.json` | which class each folder holds | the variant |

The tensor names and the few changes of shape are tables (the keymap/diffusers_*.py files); this
file moves folders and configs. Reading back, the variant comes from the configs (or variant=,
which wins): cross_attention_dim 768 is v1 (9 input channels: v1-inpainting), 1024 the v2
family, told apart by the UNet's input channels (9 inpainting, 5 depth) and, for 4 channels, by
the scheduler's prediction_type (v2 / v2-v); 96 is the bundled demo model. The latent scale is the
VAE config's scaling_factor (as diffusers).
The x4 upscaler has a pipeline of its own in diffusers (a second scheduler, a low-resolution
image input), which this module does not write or read: it is refused both ways.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

from ldm.config import PRESETS, ModelConfig
from tokenizer.bpe import load_merges
from tokenizer.clip_tokenizer import SPECIALS, build_vocabulary

from .detect import BY_IN_CHANNELS, VariantError
from .keymap import diffusers_autoencoder, diffusers_text, diffusers_unet
from .keymap.diffusers_component import ComponentMap
from .read import read_checkpoint
from .save import new_partial, save_safetensors, writing

log = logging.getLogger("ldm")

DIFFUSERS_VERSION = "0.42.1"  # the diffusers version these files were checked against (tests load them)
# component -> (weights file name without extension, config file name)
FILES = {
    "unet": ("diffusion_pytorch_model", "config.json"),
    "vae": ("diffusion_pytorch_model", "config.json"),
    "text_encoder": ("model", "config.json"),
    "scheduler": (None, "scheduler_config.json"),
}
PIPELINES = {
    "v1": "StableDiffusionPipeline", "v2": "StableDiffusionPipeline", "v2-v": "StableDiffusionPipeline",
    "v1-inpainting": "StableDiffusionInpaintPipeline", "v2-inpainting": "StableDiffusionInpaintPipeline",
    # diffusers' depth pipeline also wants its MiDaS depth_estimator, which our model does not hold:
    # pass one to from_pretrained.
    "v2-depth": "StableDiffusionDepth2ImgPipeline",
    "demo": "StableDiffusionPipeline",  # the bundled model: a small v1 (its own sizes, in the configs)
}
UPSCALER_REFUSED = ("the x4 upscaler is not supported: diffusers runs it with StableDiffusionUpscalePipeline "
                    "(a low-resolution image input and a second noise scheduler), a different folder layout")
# The CLIP tokenizer's special tokens (ids 49406, 49407) as OpenAI's CLIP and HF spell them (our
# tokenizer's "hf" flavour; its "openclip" one spells them "<start_of_text>").
HF_START_OF_TEXT, HF_END_OF_TEXT = SPECIALS["hf"]


# -- what each file holds --------------------------------------------------------------------------

def component_maps(config: ModelConfig) -> dict[str, ComponentMap]:
    """component -> its table (our names without the `unet.` / `vae.` / `text_encoder.` prefix)."""
    return {
        "unet": diffusers_unet.ours_to_diffusers(config.unet),
        "vae": diffusers_autoencoder.ours_to_diffusers(config.autoencoder),
        "text_encoder": diffusers_text.ours_to_diffusers(config.text_encoder),
    }


def scheduler_config(config: ModelConfig) -> dict:
    """The training schedule in diffusers' words: its "scaled_linear" is the original's "linear"
    (betas = linspace(sqrt(b0), sqrt(b1), T)**2). steps_offset 1 puts the sampling timesteps where
    the original DDIM/PLMS put them (its `+ 1`); no clipping of x0, and the last step's alpha_prev
    is alphas_cumprod[0], as the original. v1 gets PNDM (the original v1 script's default, PLMS),
    v2 DDIM (the original v2 script's default), as diffusers' own SD folders."""
    s = config.schedule
    common = {
        "num_train_timesteps": s.num_timesteps, "beta_start": s.linear_start, "beta_end": s.linear_end,
        "beta_schedule": "scaled_linear", "trained_betas": None,
        "prediction_type": "v_prediction" if config.prediction == "v" else "epsilon",
        "steps_offset": 1, "set_alpha_to_one": False, "timestep_spacing": "leading",
    }
    if config.text_encoder.kind == "clip":
        return {"_class_name": "PNDMScheduler", "_diffusers_version": DIFFUSERS_VERSION, **common,
                "skip_prk_steps": True}
    return {"_class_name": "DDIMScheduler", "_diffusers_version": DIFFUSERS_VERSION, **common, "clip_sample": False}


def model_index(config: ModelConfig) -> dict:
    pipeline = PIPELINES[config.name]
    index = {
        "_class_name": pipeline, "_diffusers_version": DIFFUSERS_VERSION,
        "scheduler": ["diffusers", scheduler_config(config)["_class_name"]],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "feature_extractor": [None, None],
    }
    if pipeline == "StableDiffusionDepth2ImgPipeline":
        return index | {"depth_estimator": [None, None]}
    return index | {"safety_checker": [None, None], "requires_safety_checker": False}


def tokenizer_files(config: ModelConfig) -> dict[str, str]:
    """file name -> text: the files of HF's openai/clip-vit-large-patch14 tokenizer, made from our
    BPE data. v1 pads with end-of-text (49407); v2 pads with "!", id 0, as open_clip (and diffusers'
    stabilityai/stable-diffusion-2 folders)."""
    merges = load_merges()
    vocabulary = build_vocabulary(merges, SPECIALS["hf"])
    pad = HF_END_OF_TEXT if config.text_encoder.pad_with == "eot" else vocabulary[0]

    def special(content: str) -> dict:
        return {"content": content, "single_word": False, "lstrip": False, "rstrip": False, "normalized": True}

    special_tokens = {"bos_token": special(HF_START_OF_TEXT), "eos_token": special(HF_END_OF_TEXT),
                      "unk_token": special(HF_END_OF_TEXT), "pad_token": pad}
    tokenizer_config = {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": config.text_encoder.context_length,
        "do_lower_case": True, "errors": "replace", "add_prefix_space": False,
        **{name: ({**value, "__type": "AddedToken"} if isinstance(value, dict) else value)
           for name, value in special_tokens.items()},
    }
    return {
        "vocab.json": json.dumps({symbol: i for i, symbol in enumerate(vocabulary)}, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "tokenizer_config.json": _json(tokenizer_config),
        "special_tokens_map.json": _json(special_tokens),
    }


def component_configs(config: ModelConfig, dtype: torch.dtype) -> dict[str, dict]:
    """component -> the config file diffusers (or transformers) builds it from."""
    latent_size = config.image_size // config.autoencoder.downsampling_factor
    pad_id = 49407 if config.text_encoder.pad_with == "eot" else 0
    return {
        "unet": {**diffusers_unet.unet_config(config.unet, latent_size), "_diffusers_version": DIFFUSERS_VERSION},
        "vae": {**diffusers_autoencoder.vae_config(config.autoencoder, config.scale_factor, config.image_size),
                "_diffusers_version": DIFFUSERS_VERSION},
        "text_encoder": diffusers_text.text_encoder_config(config.text_encoder, pad_id, dtype),
        "scheduler": scheduler_config(config),
    }


def _json(value: dict) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


# -- writing ---------------------------------------------------------------------------------------

def check_output_folder(folder: str | Path) -> Path:
    """A folder to write: absent or empty (nothing is ever overwritten), its parent present."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} exists and is not an empty folder; choose another (nothing is overwritten)")
    if not folder.parent.is_dir():
        raise FileNotFoundError(f"{folder}: the folder {folder.parent} does not exist")
    return folder


def write_folder(config: ModelConfig, state: Mapping[str, torch.Tensor], folder: str | Path,
                 dtype: torch.dtype) -> Path:
    """Write our StableDiffusion state dict (`unet.*`, `vae.*`, `text_encoder.*`) as a diffusers
    pipeline folder, its float tensors stored as `dtype`.

    The folder is written under a temporary name beside it and renamed when complete, so a failure
    leaves no half-written folder behind. It is made the way any new folder is (mode 0777 for the
    kernel to take the umask from, not mkdtemp's private 0700), as are its files."""
    if config.name == "x4-upscaler":
        raise VariantError(f"cannot write {folder}: {UPSCALER_REFUSED}")
    folder = check_output_folder(folder)
    partial, _ = new_partial(folder, lambda name: os.mkdir(name, 0o777))
    try:
        with writing(folder):
            write_components(config, state, partial, dtype)
        if folder.exists():
            folder.rmdir()  # empty, checked above
        os.rename(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("wrote %s (%s, %s)", folder, config.name, dtype)
    return folder


def write_components(config: ModelConfig, state: Mapping[str, torch.Tensor], partial: Path,
                     dtype: torch.dtype) -> None:
    """The folder's contents: each component's weights and config, the tokenizer, the index."""
    if any(k.startswith("depth_model.") for k in state):
        # diffusers' depth pipeline takes transformers' DPTForDepthEstimation (its own names and
        # configs) as depth_estimator, which this writer does not make: said, not dropped silently.
        log.warning("%s: MiDaS (depth_model.*) is not written; StableDiffusionDepth2ImgPipeline needs a "
                    "depth_estimator passed to from_pretrained", config.name)
    for component, table in component_maps(config).items():
        prefix = f"{component}."
        ours = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        tensors = table.to_diffusers(ours, f"{config.name} {component}", dtype)
        (partial / component).mkdir()
        save_safetensors({k: v.cpu() for k, v in tensors.items()},
                         str(partial / component / f"{FILES[component][0]}.safetensors"), {"format": "pt"})
        del tensors
    for component, values in component_configs(config, dtype).items():
        (partial / component).mkdir(exist_ok=True)
        (partial / component / FILES[component][1]).write_text(_json(values))
    (partial / "tokenizer").mkdir()
    for name, text in tokenizer_files(config).items():
        (partial / "tokenizer" / name).write_text(text, encoding="utf-8")
    (partial / "model_index.json").write_text(_json(model_index(config)))


# -- reading ---------------------------------------------------------------------------------------

def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing ({what}); a diffusers pipeline folder has unet/, vae/, "
                                "text_encoder/, scheduler/ and model_index.json")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: holds a JSON {type(value).__name__}, not an object ({what})")
    return value


def weights_path(component_folder: Path, stem: str) -> list[Path]:
    """The weight files of one component: safetensors preferred; fp16 variants; sharded indexes."""
    for name in (f"{stem}.safetensors", f"{stem}.fp16.safetensors", f"{stem}.bin", f"{stem}.fp16.bin"):
        if (component_folder / name).is_file():
            return [component_folder / name]
        index = component_folder / f"{name}.index.json"
        if index.is_file():
            weight_map = read_json(index, "a sharded weights index").get("weight_map")
            if not isinstance(weight_map, dict):
                raise ValueError(f"{index}: no \"weight_map\" object (tensor name -> shard file)")
            shards = sorted(set(map(str, weight_map.values())))
            # A shard is a file of this folder: a name from the index never leads outside it (and,
            # printed in later messages, holds no control characters).
            bad = [s for s in shards if Path(s).name != s or s in (".", "..") or not s.isprintable()]
            if bad:
                raise ValueError(f"{index}: shard names must be plain file names in {component_folder}, "
                                 f"not {', '.join(map(repr, bad[:3]))}")
            missing = [s for s in shards if not (component_folder / s).is_file()]
            if missing:
                raise FileNotFoundError(f"{index}: shard file(s) missing: {', '.join(map(repr, missing[:3]))}")
            return [component_folder / shard for shard in shards]
    present = sorted(p.name for p in component_folder.iterdir())
    raise FileNotFoundError(f"{component_folder}: no weights ({stem}.safetensors or {stem}.bin); found {present}")


def variant_from_configs(unet: dict, scheduler: dict, where: Path) -> tuple[str, str]:
    """(variant, why) from unet/config.json and scheduler/scheduler_config.json."""
    context_dim = unet.get("cross_attention_dim", 1280)
    in_channels = unet.get("in_channels", 4)
    prediction = scheduler.get("prediction_type", "epsilon")
    # Values from the file are repr()'d in every message: they may hold escape sequences or newlines.
    reason = f"cross_attention_dim {context_dim!r}, in_channels {in_channels!r}, prediction_type {prediction!r}"
    if unet.get("num_class_embeds") is not None:
        raise VariantError(f"{where}: {UPSCALER_REFUSED}")
    demo_dim = PRESETS["demo"].unet.context_dim
    if context_dim not in (768, 1024, demo_dim):
        raise VariantError(f"{where / 'unet' / 'config.json'}: cross_attention_dim={context_dim!r} is no Stable "
                           f"Diffusion 1.x/2.x model (768: v1, 1024: the v2 family; {demo_dim}: the demo model)")
    if prediction not in ("epsilon", "v_prediction"):
        raise VariantError(f"{where / 'scheduler' / 'scheduler_config.json'}: prediction_type={prediction!r}; "
                           "Stable Diffusion predicts 'epsilon' or 'v_prediction'")
    if context_dim in (768, demo_dim) and in_channels == 4:
        variant = "v1" if context_dim == 768 else "demo"
    elif context_dim == 768 and in_channels == 9:
        variant = "v1-inpainting"
    elif context_dim == 1024 and isinstance(in_channels, int) and in_channels in BY_IN_CHANNELS:
        variant = BY_IN_CHANNELS[in_channels]  # the v2 family by the UNet's input channels
        variant = "v2-v" if variant == "v2" and prediction == "v_prediction" else variant
    else:
        raise VariantError(f"{where}: no Stable Diffusion variant has {reason}; pass variant= explicitly")
    if variant == "x4-upscaler":
        raise VariantError(f"{where}: {UPSCALER_REFUSED}")
    if (prediction == "v_prediction") != (PRESETS[variant].prediction == "v"):
        raise VariantError(f"{where}: the {variant} variant does not predict {prediction} ({reason}); "
                           "pass variant= explicitly")
    return variant, reason


# Each component's config.json is checked field by field against the variant's (keymap.normalised).
CHECKED_CONFIGS = {"unet": diffusers_unet, "vae": diffusers_autoencoder, "text_encoder": diffusers_text}
SCHEDULE_FIELDS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")


def check_config(path: Path, found: dict, expected: dict, variant: str) -> None:
    """Every checked field of a folder's config equals the variant's (defaults filled on both sides)."""
    wrong = [f"{k}: the folder has {found[k]!r}, {variant} needs {expected[k]!r}"
             for k in expected if found[k] != expected[k]]
    if wrong:
        raise ValueError(f"{path}: does not describe the {variant} variant: " + "; ".join(wrong))


def folder_variant(folder: str | Path, variant: str | None = None, dtype: torch.dtype = torch.float32) -> ModelConfig:
    """The variant of a diffusers pipeline folder, from its configs (or `variant`, which wins), each
    component's config checked field by field against the variant's. dtype: the one expected in
    text_encoder/config.json's torch_dtype."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder (a diffusers pipeline folder is expected)")
    if variant is not None and variant not in PRESETS:
        raise ValueError(f"variant={variant!r} is not known; use one of {sorted(PRESETS)}")
    index = read_json(folder / "model_index.json", "the pipeline's index")
    if index.get("_class_name") == "StableDiffusionUpscalePipeline" or variant == "x4-upscaler":
        raise VariantError(f"{folder}: {UPSCALER_REFUSED}")
    found = {c: read_json(folder / c / name, f"the {c} component") for c, (_, name) in FILES.items()}

    if variant is None:
        variant, reason = variant_from_configs(found["unet"], found["scheduler"], folder)
    else:
        reason = f"explicit variant={variant!r}"
    config = PRESETS[variant]
    if config.depth_model is not None:
        # A depth folder's depth_estimator is transformers' DPTForDepthEstimation (its own key names),
        # not read here: depth2img then runs on a depth map the caller gives.
        config = replace(config, depth_model=None)
    scaling_factor = found["vae"].get("scaling_factor", config.scale_factor)
    if type(scaling_factor) in (int, float) and 0 < scaling_factor < math.inf and scaling_factor != config.scale_factor:
        # diffusers scales the latents by the VAE config's scaling_factor: a re-trained model's own
        # (the demo model's), as an original file's `scale_factor` buffer (checkpoints_convert/load.py).
        config = replace(config, scale_factor=float(scaling_factor))
    log.info("%s: variant %s (%s)", folder, variant, reason)
    expected = component_configs(config, dtype)
    for component, keymap in CHECKED_CONFIGS.items():
        check_config(folder / component / FILES[component][1], keymap.normalised(found[component]),
                     keymap.normalised(expected[component]), variant)
    schedule = {k: found["scheduler"].get(k) for k in SCHEDULE_FIELDS}
    if schedule != {k: expected["scheduler"][k] for k in SCHEDULE_FIELDS}:
        log.warning("%s: the scheduler's training schedule %s is not the %s variant's; the variant's is used",
                    folder, schedule, variant)
    return config


def read_folder(folder: str | Path, config: ModelConfig, shapes: Mapping[str, torch.Size],
                dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The weights of a diffusers pipeline folder under our StableDiffusion names, as `dtype`.
    shapes: our model's state-dict shapes, which size the tensors diffusers does not store.

    The folder's `tokenizer/` is not read: ours is built in and pads as the variant's original did.
    The scheduler config told eps from v (folder_variant); the schedule itself is the variant's."""
    folder = Path(folder)
    weights = {c: weights_path(folder / c, stem) for c, (stem, _) in FILES.items() if stem}
    state = {}
    for component, table in component_maps(config).items():
        tensors = {}
        for path in weights[component]:
            tensors |= read_checkpoint(path)
        if component == "text_encoder":
            tensors = diffusers_text.with_text_model_level(tensors)
        prefix = f"{component}."
        component_shapes = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
        what = f"{folder / component} ({config.name})"
        state |= {prefix + k: v.to(dtype) for k, v in table.from_diffusers(tensors, what, component_shapes).items()}
        del tensors
    return state
