"""Our weights <-> diffusers pipeline folders (checkpoints_convert/diffusers.py, ldm/convert.py).

For v1 and v2 at full size: a StableDiffusion with every tensor random (seeded, and keyed by its
name) is saved as an original file, converted to a diffusers folder (`convert`, i.e.
from_checkpoint + save_diffusers) and read back (`from_diffusers`): every tensor must equal the one
drawn (torch.equal; drawn again key by key, so only one full model is in memory at a time). The
folder converted back to an original file must hold the same tensors under the same keys. Then
diffusers' own StableDiffusionPipeline.from_pretrained loads the folder (offline, sockets refused)
and its UNet, VAE and text encoder run the inputs ours ran before export.
Measure: max|ours - diffusers| / max|diffusers|, float32 on CPU. Tolerance: 1e-5 (same operations
up to summation order). Tokenizer: the same ids.

The one deliberate difference: v2's last text block (resblocks.23), which SD never runs, is not in
diffusers folders (diffusers' own converter drops it too); read back it is zeros, an identity block.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from checkpoints_convert.detect import VariantError
from checkpoints_convert.diffusers import component_configs, component_maps, model_index
from ldm.config import DEMO, PRESETS, V1, V2, X4_UPSCALER
from ldm.convert import convert
from ldm.pipeline import StableDiffusion
from tests.reference.original_ldm import relative_error
from tests.reference.parity_record import record_parity
from tests.reference.random_weights import drawn, norm_scale_keys
from tokenizer import CLIPTokenizer

TOLERANCE = 1e-5
LATENT = (16, 24)
PROMPTS = ["a photograph of an astronaut riding a horse", ""]  # through both text encoders
# Only through both tokenizers (cheap): punctuation, digits, accents, a prompt cut at 77 ids.
TOKENIZER_PROMPTS = PROMPTS + ["Hello, world: it's 3:45pm, café déjà vu", "a castle on a hill, " * 20]
SEED = 20240601
V2_DROPPED_BLOCK = "text_encoder.blocks.23."  # ours; cond_stage_model.model.transformer.resblocks.23. in files
V2_DROPPED_ORIGINAL = "cond_stage_model.model.transformer.resblocks.23."


# Everything is local: any connection attempt fails loudly (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("offline")


# -- random weights, reproducible key by key ---------------------------------------------------------

def random_model(config) -> StableDiffusion:
    with torch.device("meta"):
        sd = StableDiffusion(config)
    scales = norm_scale_keys(sd)
    state = {k: drawn(k, v.shape, k in scales) for k, v in sd.state_dict().items()}
    sd.load_state_dict(state, strict=True, assign=True)
    return sd.eval()


def make_inputs(config, tokenizer: CLIPTokenizer) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return {
        "x": torch.randn(2, config.unet.in_channels, *LATENT, generator=generator),
        "t": torch.tensor([10.0, 981.0]),
        "context": torch.randn(2, 77, config.unet.context_dim, generator=generator),
        "image": torch.rand(1, 3, 64, 96, generator=generator) * 2 - 1,
        "z": torch.randn(1, 4, 8, 12, generator=generator),
        "tokens": tokenizer(PROMPTS),
    }


@torch.no_grad()
def run_ours(sd: StableDiffusion, inputs: dict) -> dict[str, torch.Tensor]:
    posterior = sd.vae.encode(inputs["image"])
    return {
        "unet": sd.unet(inputs["x"], inputs["t"], inputs["context"]),
        "vae mean": posterior.mean, "vae logvar": posterior.logvar, "vae decoded": sd.vae.decode(inputs["z"]),
        "text": sd.text_encoder(inputs["tokens"]),
    }


@pytest.fixture(scope="module", params=["v1", "v2"])
def exported(request, tmp_path_factory):
    """One preset: random model -> its outputs -> original file -> (convert) diffusers folder.
    Only the small outputs and the two paths leave; the files are removed at the end."""
    variant = request.param
    config = PRESETS[variant]
    tmp = tmp_path_factory.mktemp(f"diffusers-{variant}")
    times, start = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal start
        times[name], start = time.perf_counter() - start, time.perf_counter()

    sd = random_model(config)
    lap("random model")
    inputs = make_inputs(config, sd.tokenizer)
    outputs = run_ours(sd, inputs)
    lap("our outputs")
    original = sd.save_checkpoint(tmp / "original.safetensors")
    lap("original file")
    del sd
    gc.collect()
    folder = convert(original, tmp / "diffusers", variant=variant, to="diffusers")
    lap("convert to diffusers")
    print(f"\n{variant}: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in times.items()))
    yield {"variant": variant, "config": config, "tmp": tmp, "original": original, "folder": folder,
           "inputs": inputs, "outputs": outputs}
    shutil.rmtree(tmp, ignore_errors=True)


# -- bit-exact round trips ---------------------------------------------------------------------------------

@pytest.mark.slow  # full-size v1 and v2 models
def test_folder_layout(exported):
    folder = exported["folder"]
    names = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert names == {
        "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json", "text_encoder/model.safetensors",
        "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
        "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json",
    }
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["safety_checker"] == [None, None]
    assert index["requires_safety_checker"] is False
    text = json.loads((folder / "text_encoder" / "config.json").read_text())
    assert (text["num_hidden_layers"], text["hidden_act"]) == ((12, "quick_gelu") if exported["variant"] == "v1"
                                                               else (23, "gelu"))


@pytest.mark.slow  # full-size v1 and v2 models
def test_to_diffusers_and_back_is_bit_exact(exported):
    variant = exported["variant"]
    start = time.perf_counter()
    sd = StableDiffusion.from_diffusers(exported["folder"])  # the variant from the configs
    seconds = time.perf_counter() - start
    assert sd.variant == variant
    scales = norm_scale_keys(sd)
    state = sd.state_dict()
    different = [k for k, v in state.items() if not k.startswith(V2_DROPPED_BLOCK)
                 and not torch.equal(v, drawn(k, v.shape, k in scales))]
    dropped = [k for k in state if k.startswith(V2_DROPPED_BLOCK)] if variant == "v2" else []
    print(f"{variant}: from_diffusers {seconds:.1f}s; {len(state) - len(dropped)} tensors bit-identical, "
          f"{len(different)} different; {len(dropped)} zero-filled (v2's unused last text block)")
    assert different == []
    assert all(not state[k].any() for k in dropped)
    assert len(dropped) == (12 if variant == "v2" else 0)
    del sd, state
    gc.collect()


# -- diffusers' own pipeline on our folder ---------------------------------------------------------------

@pytest.mark.slow  # full-size v1 and v2 models
@torch.no_grad()
def test_diffusers_pipeline_loads_and_matches_ours(exported):
    from diffusers import DDIMScheduler, PNDMScheduler, StableDiffusionPipeline

    variant, inputs, ours = exported["variant"], exported["inputs"], exported["outputs"]
    start = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(exported["folder"], local_files_only=True)
    print(f"{variant}: StableDiffusionPipeline.from_pretrained {time.perf_counter() - start:.1f}s")
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    scheduler = pipe.scheduler.config
    assert isinstance(pipe.scheduler, PNDMScheduler if variant == "v1" else DDIMScheduler)
    assert (scheduler.beta_schedule, scheduler.beta_start, scheduler.beta_end) == ("scaled_linear", 0.00085, 0.012)
    assert (scheduler.steps_offset, scheduler.set_alpha_to_one, scheduler.prediction_type) == (1, False, "epsilon")

    posterior = pipe.vae.encode(inputs["image"]).latent_dist
    theirs = {
        "unet": pipe.unet(inputs["x"], inputs["t"], encoder_hidden_states=inputs["context"]).sample,
        "vae mean": posterior.mean, "vae logvar": posterior.logvar,
        "vae decoded": pipe.vae.decode(inputs["z"]).sample,
        "text": pipe.text_encoder(inputs["tokens"])[0],
    }
    for name, reference in theirs.items():
        assert reference.shape == ours[name].shape, name
        assert reference.std() > 0.1, f"the diffusers {name} output is trivial: the test would prove nothing"
        error = relative_error(ours[name], reference)
        print(f"{variant} {name}: ours vs diffusers {error:.2e}")
        record_parity("to_diffusers", variant, f"latent {LATENT[0]}x{LATENT[1]}" if name == "unet" else "small",
                      name, "diffusers StableDiffusionPipeline from our folder", error, TOLERANCE)
        assert error <= TOLERANCE, name

    ids = pipe.tokenizer(TOKENIZER_PROMPTS, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    assert torch.equal(ids, CLIPTokenizer(pad_with=exported["config"].text_encoder.pad_with)(TOKENIZER_PROMPTS))
    assert pipe.tokenizer.pad_token_id == (49407 if variant == "v1" else 0)
    if variant == "v2":
        # diffusers' v2 tokenizer makes its pad token "!" special, so a "!" in a prompt becomes id 0
        # where open_clip (and ours) read "!</w>" = 256 (huggingface/diffusers#4153). Pinned here.
        ours_ids = CLIPTokenizer(pad_with="zero")(["wow!"])[0].tolist()
        their_ids = pipe.tokenizer(["wow!"], padding="max_length", max_length=77).input_ids[0]
        assert [(a, b) for a, b in zip(ours_ids, their_ids) if a != b] == [(256, 0)]
    del pipe
    gc.collect()


# -- the way back to an original file ----------------------------------------------------------------------

@pytest.mark.slow  # full-size v1 and v2 models
def test_original_to_diffusers_to_original_is_bit_exact(exported):
    """v1 back to float32: every tensor identical. v2 back with half=True: every tensor the float16
    rounding of the original (v2's float32 exactness, the q/k/v split included, is the test above)."""
    variant, tmp = exported["variant"], exported["tmp"]
    half = variant == "v2"
    back = convert(exported["folder"], tmp / "back.safetensors", to="original", half=half)
    with safe_open(exported["original"], "pt") as before, safe_open(back, "pt") as after:
        assert set(before.keys()) == set(after.keys())
        weights = [k for k in before.keys() if k.startswith(("model.", "first_stage_model.", "cond_stage_model."))]
        schedule = [k for k in before.keys() if k not in weights]  # float32 in both

        def expected(key: str) -> torch.Tensor:
            tensor = before.get_tensor(key)
            return tensor.half() if half and key in weights else tensor

        different = [k for k in before.keys() if not k.startswith(V2_DROPPED_ORIGINAL)
                     and not torch.equal(expected(k), after.get_tensor(k))]
        dropped = [k for k in after.keys() if k.startswith(V2_DROPPED_ORIGINAL)]
        assert all(not after.get_tensor(k).any() for k in dropped)
        assert {after.get_tensor(k).dtype for k in weights} == {torch.float16 if half else torch.float32}
        print(f"{variant}: original -> diffusers -> original{' (half)' if half else ''}: "
              f"{len(before.keys()) - len(dropped)} tensors bit-identical ({len(schedule)} schedule buffers), "
              f"{len(different)} different, {len(dropped)} zero-filled")
    assert different == []
    back.unlink()


# -- the tables against diffusers' and transformers' own models (meta: no memory) -------------------------

@pytest.mark.parametrize("variant", [name for name in PRESETS if name != "x4-upscaler"])
def test_tables_cover_both_models_exactly(variant):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    config = PRESETS[variant]
    configs = component_configs(config, torch.float32)
    with torch.device("meta"):
        ours = StableDiffusion(config)
        theirs = {"unet": UNet2DConditionModel.from_config(configs["unet"]),
                  "vae": AutoencoderKL.from_config(configs["vae"]),
                  "text_encoder": CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))}
    for component, table in component_maps(config).items():
        our_shapes = {k: v.shape for k, v in getattr(ours, component).state_dict().items()}
        their_shapes = {k: v.shape for k, v in theirs[component].state_dict().items()}
        if component == "text_encoder":  # transformers 5 names lack the `text_model.` level of diffusers folders
            their_shapes = {"text_model." + k: v for k, v in their_shapes.items()}
        assert table.ours_keys() == set(our_shapes), component
        assert table.diffusers_keys() == set(their_shapes), component
        assert all(our_shapes[k] == their_shapes[t] for k, t in table.renames.items()), component
        assert all(our_shapes[k] == their_shapes[t] + (1, 1) for k, t in table.squeezed.items()), component
        for k, parts in table.split.items():
            assert our_shapes[k][0] == sum(their_shapes[t][0] for t in parts), k
        print(f"{variant} {component}: {len(our_shapes)} ours / {len(their_shapes)} diffusers keys, "
              f"{len(table.squeezed)} squeezed, {len(table.split)} split, {len(table.not_stored)} not stored")


# -- bad inputs: one clear exception each -------------------------------------------------------------------

def configs_only_folder(folder: Path, config, drop: str | None = None, **unet_changes) -> Path:
    """A pipeline folder with every config file but no weights (the errors come before any weight)."""
    for component, values in component_configs(config, torch.float32).items():
        if component == drop:
            continue
        values = values | unet_changes if component == "unet" else values
        name = "scheduler_config.json" if component == "scheduler" else "config.json"
        (folder / component).mkdir(parents=True)
        (folder / component / name).write_text(json.dumps(values))
    (folder / "model_index.json").write_text(json.dumps(model_index(config)))
    return folder


def test_refuses_to_write_into_a_non_empty_folder(tmp_path):
    with torch.device("meta"):
        sd = StableDiffusion(V1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="out exists and is not an empty folder"):
        sd.save_diffusers(tmp_path / "out")
    with pytest.raises(FileExistsError, match="out exists"):
        convert(tmp_path / "no-such.ckpt", tmp_path / "out", to="diffusers")  # refused before reading
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


def test_refuses_a_folder_with_a_missing_component(tmp_path):
    folder = configs_only_folder(tmp_path / "no-vae", V1, drop="vae")
    with pytest.raises(FileNotFoundError, match=r"no-vae/vae/config.json: missing \(the vae component\)"):
        StableDiffusion.from_diffusers(folder)
    folder = configs_only_folder(tmp_path / "no-weights", V1)
    with pytest.raises(FileNotFoundError, match=r"no-weights/unet: no weights"):
        StableDiffusion.from_diffusers(folder)


def test_refuses_an_unknown_cross_attention_dim(tmp_path):
    folder = configs_only_folder(tmp_path / "sdxl-like", V1, cross_attention_dim=2048)
    with pytest.raises(VariantError, match="cross_attention_dim=2048 is no Stable Diffusion 1.x/2.x model"):
        StableDiffusion.from_diffusers(folder)


def test_refuses_a_config_that_contradicts_the_explicit_variant(tmp_path):
    folder = configs_only_folder(tmp_path / "v2", V2)
    with pytest.raises(ValueError, match=r"does not describe the v1 variant: .*cross_attention_dim: the folder "
                                         r"has 1024, v1 needs 768"):
        StableDiffusion.from_diffusers(folder, variant="v1")


def test_refuses_the_x4_upscaler_both_ways(tmp_path):
    with torch.device("meta"):
        sd = StableDiffusion(X4_UPSCALER)
    with pytest.raises(VariantError, match="x4 upscaler is not supported"):
        sd.save_diffusers(tmp_path / "up")
    assert not (tmp_path / "up").exists()
    folder = configs_only_folder(tmp_path / "upscaler", V2, num_class_embeds=1000)
    with pytest.raises(VariantError, match="x4 upscaler is not supported"):
        StableDiffusion.from_diffusers(folder)


def test_convert_names_the_accepted_directions(tmp_path):
    with pytest.raises(ValueError, match="to='onnx'"):
        convert(tmp_path / "a", tmp_path / "b", to="onnx")


# What to write follows the output's name (or `to`); a request that is ambiguous or contradicts
# itself is refused with what to say instead, before the input is read (it does not even exist here).
@pytest.mark.parametrize("output, options, error, message", [
    ("out.bin", {}, ValueError, "the output .*out.bin has the unknown extension '.bin': name a .safetensors, .ckpt, "
                                ".pt, .pth file .* or a folder without an extension .*, or say which with --to"),
    ("out.ckpt", {"to": "diffusers"}, ValueError, "--to diffusers, but the output .*out.ckpt has the single-file "
                                                  "extension '.ckpt': a diffusers pipeline is a folder"),
    ("out", {"to": "original"}, ValueError, "--to original, but the output .*out has no extension: an original "
                                            "checkpoint is one file named .safetensors, .ckpt, .pt, .pth"),
    ("out.bin", {"to": "original"}, ValueError, "--to original, but the output .*out.bin has the extension '.bin'"),
    ("missing/out.ckpt", {}, FileNotFoundError, "out.ckpt: the folder .*missing does not exist"),
    ("missing/out", {}, FileNotFoundError, "out: the folder .*missing does not exist"),
    ("taken.ckpt", {}, FileExistsError, "taken.ckpt exists; choose another name"),
    ("out", {"ema": "keep"}, ValueError, "--ema keep: a diffusers folder holds one set of UNet weights; choose "
                                         "--ema use .* or --ema drop"),
    ("out.ckpt", {"ema": "newest"}, ValueError, "ema='newest': use one of 'keep', 'drop', 'use'"),
])
def test_convert_refuses_what_it_cannot_tell_or_would_overwrite(tmp_path, output, options, error, message):
    (tmp_path / "taken.ckpt").write_bytes(b"mine")
    with pytest.raises(error, match=message):
        convert(tmp_path / "not-read.ckpt", tmp_path / output, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.ckpt"]
    assert (tmp_path / "taken.ckpt").read_bytes() == b"mine"


def test_convert_refuses_a_folder_to_a_folder_and_ema_from_a_folder(tmp_path):
    (tmp_path / "pipeline").mkdir()
    with pytest.raises(ValueError, match="pipeline and the output .*copy are both diffusers folders: nothing to "
                                         "convert; name a .safetensors, .ckpt, .pt, .pth file"):
        convert(tmp_path / "pipeline", tmp_path / "copy")
    with pytest.raises(ValueError, match="--ema use: the input .*pipeline is a diffusers folder, which holds no EMA"):
        convert(tmp_path / "pipeline", tmp_path / "out.safetensors", ema="use")
    assert [p.name for p in tmp_path.iterdir()] == ["pipeline"]


# -- the demo model, and the folder's permissions ------------------------------------------------------------

@torch.no_grad()
def test_the_demo_model_converts_to_a_folder_diffusers_runs_and_back(tmp_path):
    """The bundled model (its own sizes, cross_attention_dim 96, and its own latent scale): diffusers'
    StableDiffusionPipeline loads the folder and its UNet and text encoder compute ours; read back,
    the variant and the scale are found from the configs and every tensor is the same."""
    from diffusers import StableDiffusionPipeline

    sd = StableDiffusion.demo(device="cpu", dtype=torch.float32)
    assert sd.config.scale_factor != DEMO.scale_factor  # re-trained: the file's own scale
    folder = convert(ldm_demo_checkpoint(), tmp_path / "demo")  # no extension: a diffusers folder
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    assert pipe.vae.config.scaling_factor == sd.config.scale_factor
    generator = torch.Generator().manual_seed(0)
    x, context = torch.randn(2, 4, 16, 16, generator=generator), torch.randn(2, 77, 96, generator=generator)
    t, tokens = torch.tensor([10.0, 900.0]), sd.tokenizer(["a red circle on a blue background", ""])
    ours = {"unet": sd.unet(x, t, context), "text": sd.text_encoder(tokens)}
    theirs = {"unet": pipe.unet(x, t, encoder_hidden_states=context).sample, "text": pipe.text_encoder(tokens)[0]}
    for name, reference in theirs.items():
        assert reference.std() > 0.1
        assert relative_error(ours[name], reference) <= TOLERANCE, name

    back = StableDiffusion.from_diffusers(folder)  # the variant and the scale from the configs
    assert back.variant == "demo" and back.config == sd.config
    assert all(torch.equal(back.state_dict()[k], v) for k, v in sd.state_dict().items())


def ldm_demo_checkpoint() -> Path:
    from ldm.demo import CHECKPOINT

    return CHECKPOINT


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_the_folder_and_its_files_get_the_permissions_of_the_umask(tiny_sd, tmp_path, umask):
    """Not mkdtemp's private 0700 for the folder, nor the 0600 of safetensors' temporary file for the
    weights: 0777 / 0666 less the umask, as any program's folders and files."""
    previous = os.umask(umask)
    try:
        folder = tiny_sd.save_diffusers(tmp_path / "out", torch.float32)
    finally:
        os.umask(previous)
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in [folder, *folder.rglob("*")]}
    assert len(modes) == 18  # the folder, its 5 subfolders and 12 files
    expected = {name: 0o777 & ~umask if (tmp_path / name).is_dir() else 0o666 & ~umask for name in modes}
    assert modes == expected


# -- a hostile folder: its text never reaches the terminal raw ------------------------------------------------

HOSTILE = "\x1b[31mred\nnext line"


def test_messages_quote_the_folder_s_content_with_repr(tmp_path):
    """A config value or a shard name from the folder is shown repr()'d: the escape sequence and the
    newline appear as `\\x1b` and `\\n`, never raw."""
    folder = configs_only_folder(tmp_path / "hostile", V1, cross_attention_dim=HOSTILE)
    with pytest.raises(VariantError) as refused:
        StableDiffusion.from_diffusers(folder)
    assert repr(HOSTILE) in str(refused.value) and "\x1b" not in str(refused.value) and "\n" not in str(refused.value)

    folder = configs_only_folder(tmp_path / "sharded", V1)
    index = {"weight_map": {"conv_in.weight": HOSTILE + ".safetensors"}}
    (folder / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError) as refused:
        StableDiffusion.from_diffusers(folder)
    assert repr(HOSTILE + ".safetensors") in str(refused.value) and "\x1b" not in str(refused.value)
    assert "shard names must be plain file names" in str(refused.value)


@pytest.mark.parametrize("in_channels, context_dim, expected", [(4, 768, "v1"), (9, 768, "v1-inpainting"),
                                                                 (9, 1024, "v2-inpainting"), (5, 1024, "v2-depth")])
def test_the_variant_is_told_by_the_folders_configs(tmp_path, in_channels, context_dim, expected):
    from checkpoints_convert.diffusers import variant_from_configs

    unet = {"cross_attention_dim": context_dim, "in_channels": in_channels}
    assert variant_from_configs(unet, {"prediction_type": "epsilon"}, tmp_path)[0] == expected
