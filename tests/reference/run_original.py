"""Runs inside a subprocess whose PYTHONPATH starts with the unpacked ORIGINAL `ldm` package
(stable-diffusion-sdkit 2.1.5). It must never import this project's packages.

    python run_original.py JOB.json

JOB.json: {"component": ..., "params": {...}, "seed": int, "inputs": path, "outputs": path,
"state_dict": path}. Builds the original module, gives EVERY parameter and buffer random values
(the original zero-initialises output layers, so a fresh model outputs exact zeros and would prove
nothing), runs it on the inputs, and writes the state dict (original key names) and the outputs as
safetensors files.
"""

import contextlib
import json
import sys

import torch
from random_weights import randomise  # this folder is sys.path[0]: the runner is run as a script
from safetensors.torch import load_file, save_file


@contextlib.contextmanager
def without_initialisation():
    """torch.nn.init's functions as no-ops while a model is built that a file will fill.

    The original scripts build the model (every layer drawn at random) and then overwrite every
    weight from the checkpoint: the draws are wasted work (9 s of the 40 s a full-size v1 load
    took here). What the file does not hold keeps what torch.empty gave it; load_saved reports
    those keys and the tests assert they are exactly the few tensors SD never runs."""
    names = [name for name in dir(torch.nn.init) if name.endswith("_") and not name.startswith("_")]
    saved = {name: getattr(torch.nn.init, name) for name in names}
    for name in names:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


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


def import_open_clip(root: str):
    """open_clip's real model code without its package __init__ (which imports torchvision and
    fails beside the CPU torch wheel): a bare package object over the unpacked wheel, and a stub
    for the one torchvision class open_clip/utils.py imports (a vision-only batch norm)."""
    import types

    import transformers  # noqa: F401 - imported before the stub exists, so it sees no torchvision

    stubs = ("torchvision", "torchvision.ops", "torchvision.ops.misc")
    for name in stubs:
        sys.modules[name] = types.ModuleType(name)
    sys.modules["torchvision.ops.misc"].FrozenBatchNorm2d = type("FrozenBatchNorm2d", (torch.nn.Module,), {})
    package = types.ModuleType("open_clip")
    package.__path__ = [f"{root}/open_clip"]
    sys.modules["open_clip"] = package
    try:
        from open_clip.model import CLIP
    finally:
        for name in stubs:
            del sys.modules[name]

    text_cfg = json.load(open(f"{root}/open_clip/model_configs/ViT-H-14.json"))
    # The vision tower is deleted by the original FrozenOpenCLIPEmbedder; a tiny one saves time.
    tiny_vision = {"image_size": 28, "layers": 1, "width": 64, "head_width": 64, "patch_size": 14}

    def create_model_and_transforms(arch, device=None, pretrained=None):
        assert arch == "ViT-H-14" and pretrained is None
        return CLIP(embed_dim=text_cfg["embed_dim"], vision_cfg=tiny_vision, text_cfg=text_cfg["text_cfg"]), None, None

    package.create_model_and_transforms = create_model_and_transforms


def build_text_encoder(kind: str, open_clip_root: str):
    """(module whose state dict is the checkpoint's cond_stage_model.*, run(tokens) -> context)."""
    if kind == "clip":
        # The original FrozenCLIPEmbedder wraps transformers' CLIPTextModel (openai/clip-vit-large-patch14);
        # the same model from its config. transformers 5 names drop the `text_model.` level that
        # the released checkpoints carry (written by transformers 4): it is put back when saving.
        from transformers import CLIPTextConfig, CLIPTextModel

        config = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
                                attn_implementation="eager")
        wrapper = torch.nn.Module()
        wrapper.transformer = CLIPTextModel(config).eval()
        return wrapper, lambda tokens: wrapper.transformer(input_ids=tokens).last_hidden_state
    import_open_clip(open_clip_root)
    from ldm.modules.encoders.modules import FrozenOpenCLIPEmbedder

    embedder = FrozenOpenCLIPEmbedder(arch="ViT-H-14", version=None, device="cpu", layer="penultimate").eval()
    return embedder, embedder.encode_with_transformer


def build_checkpoint(job: dict, inputs: dict) -> dict:
    """A whole original checkpoint of one variant, every tensor random, written in several formats.

    params: {"unet": yaml unet params, "first_stage": yaml first_stage params, "text": "clip" |
    "openclip", "upscaler": bool, "files": [{"path", "format": zip|legacy|safetensors,
    "dtype": fp32|fp16, "ema": bool}]}. Returns the outputs of the original modules.
    """
    from ldm.modules.diffusionmodules.openaimodel import UNetModel
    from ldm.modules.diffusionmodules.util import make_beta_schedule
    from ldm.modules.ema import LitEma

    params, seed = job["params"], job["seed"]
    with torch.device("meta"):
        unet = UNetModel(**params["unet"]).eval()
        vae, _ = build_autoencoder(params["first_stage"], inputs)
    for module in (unet, vae):
        module.to_empty(device="cpu")
    randomise(vae, seed + 1)
    with without_initialisation():  # every weight is drawn next
        text_encoder, encode = build_text_encoder(params["text"], job["open_clip_root"])
    randomise(text_encoder, seed + 2)

    wrapper = torch.nn.Module()  # DiffusionWrapper: its UNet is `diffusion_model`
    wrapper.diffusion_model = unet
    # The EMA copies differ from the weights, as after training: LitEma copies one random draw of
    # the UNet, then the UNet gets another.
    randomise(unet, seed + 3)
    ema = LitEma(wrapper)
    ema.num_updates.fill_(1000)
    randomise(unet, seed)
    # Every weight made representable in float16, so the fp16 and fp32 files hold the same numbers
    # and both can be compared with one set of reference outputs.
    with torch.no_grad():
        for module in (unet, vae, text_encoder, ema):
            for tensor in module.state_dict(keep_vars=True).values():
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half().float())

    state = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    state |= {f"first_stage_model.{k}": v for k, v in vae.state_dict().items()}
    text_prefix = "cond_stage_model.transformer." if params["text"] == "clip" else "cond_stage_model.model."
    for key, value in text_encoder.state_dict().items():
        key = key.removeprefix("transformer.").removeprefix("model.")
        if params["text"] == "clip":
            key = "text_model." + key
        state[text_prefix + key] = value
    if params["text"] == "clip":
        state[text_prefix + "text_model.embeddings.position_ids"] = torch.arange(77)[None]
    state |= {f"model_ema.{k}": v for k, v in ema.state_dict().items()}

    # The schedule buffers of ddpm.py's register_schedule (the class imports pytorch_lightning, so
    # its few lines are followed here, on the original make_beta_schedule).
    import numpy as np

    betas = make_beta_schedule("linear", 1000, linear_start=params["linear_start"], linear_end=params["linear_end"])
    alphas_cumprod = np.cumprod(1.0 - betas, axis=0)
    previous = np.append(1.0, alphas_cumprod[:-1])
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    state |= {"betas": as_tensor(betas), "alphas_cumprod": as_tensor(alphas_cumprod),
              "alphas_cumprod_prev": as_tensor(previous),
              "sqrt_alphas_cumprod": as_tensor(np.sqrt(alphas_cumprod)),
              "sqrt_one_minus_alphas_cumprod": as_tensor(np.sqrt(1.0 - alphas_cumprod))}
    if params.get("upscaler"):
        from ldm.modules.diffusionmodules.upscaling import ImageConcatWithNoiseAugmentation

        low_scale = ImageConcatWithNoiseAugmentation({"linear_start": 0.0001, "linear_end": 0.02}, max_noise_level=350)
        state |= {f"low_scale_model.{k}": v for k, v in low_scale.state_dict().items()}

    with torch.no_grad():
        y = inputs.get("y")
        outputs = {
            "unet": unet(inputs["x"], inputs["t"], context=inputs["context"], y=y),
            "decoded": vae.decoder(vae.post_quant_conv(inputs["z"])),
            "text": encode(inputs["tokens"]),
        }
        # The UNet with its EMA weights, without touching its own (which `state` shares).
        shadows = ema.state_dict()
        ema_weights = {name.removeprefix("diffusion_model."): shadows[shadow] for name, shadow in ema.m_name2s_name.items()}
        outputs["unet_ema"] = torch.func.functional_call(
            unet, ema_weights, (inputs["x"], inputs["t"]), {"context": inputs["context"], "y": y})
        # A file whose output-layer bias is shifted (a constructed case for the eps/v probe; see the
        # test): its bias, rounded as every weight is, and what the UNet computes with it.
        shifts = {spec["bias_shift"] for spec in params["files"] if spec.get("bias_shift")}
        assert len(shifts) <= 1, "one bias shift per checkpoint"
        for shift in shifts:
            shifted_bias = (unet.out[2].bias + shift).half().float()
            outputs["unet_shifted"] = torch.func.functional_call(
                unet, {"out.2.bias": shifted_bias}, (inputs["x"], inputs["t"]), {"context": inputs["context"], "y": y},
                strict=False)

    for spec in params["files"]:
        tensors = {k: v.contiguous() for k, v in state.items()}
        if spec["dtype"] == "fp16":
            tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        if not spec["ema"]:
            tensors = {k: v for k, v in tensors.items() if not k.startswith("model_ema.")}
        if spec.get("bias_shift"):
            tensors["model.diffusion_model.out.2.bias"] = shifted_bias.to(tensors["model.diffusion_model.out.2.bias"].dtype)
        if spec["format"] == "safetensors":
            save_file(tensors, spec["path"])
        else:
            checkpoint = {"epoch": 1, "global_step": 1000, "pytorch-lightning_version": "1.4.2", "state_dict": tensors}
            torch.save(checkpoint, spec["path"], _use_new_zipfile_serialization=spec["format"] == "zip")
    return outputs


def import_latent_diffusion():
    """The original LatentDiffusion (ddpm.py). It subclasses pytorch_lightning.LightningModule and
    imports torchvision's make_grid for logging; neither is installed, neither takes part in
    inference: stand-ins (a LightningModule that is a plain nn.Module) are put in their place."""
    import types

    class LightningModule(torch.nn.Module):
        device = torch.device("cpu")  # what pytorch_lightning's property reports for a CPU module

    lightning = types.ModuleType("pytorch_lightning")
    lightning.LightningModule = LightningModule
    distributed = types.ModuleType("pytorch_lightning.utilities.distributed")
    distributed.rank_zero_only = lambda function: function
    vision_utils = types.ModuleType("torchvision.utils")
    vision_utils.make_grid = None
    import transformers  # noqa: F401 - before the torchvision stand-in exists, so it sees none

    sys.modules.update({"pytorch_lightning": lightning, "pytorch_lightning.utilities": types.ModuleType("x"),
                        "pytorch_lightning.utilities.distributed": distributed,
                        "torchvision": types.ModuleType("torchvision"), "torchvision.utils": vision_utils})
    try:
        from ldm.models.diffusion.ddpm import LatentDiffusion
    finally:
        del sys.modules["torchvision"], sys.modules["torchvision.utils"]
    return LatentDiffusion


def small_latent_diffusion(params: dict, parameterization: str):
    """The original LatentDiffusion with params["unet"] and params["ddconfig"], identity
    conditioning (the context is given directly) and the real schedule buffers."""
    LatentDiffusion = import_latent_diffusion()
    return LatentDiffusion(
        first_stage_config={"target": "ldm.models.autoencoder.AutoencoderKL",
                            "params": {"embed_dim": 4, "ddconfig": params["ddconfig"],
                                       "lossconfig": {"target": "torch.nn.Identity"}}},
        cond_stage_config={"target": "torch.nn.Identity"},
        unet_config={"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": params["unet"]},
        linear_start=0.00085, linear_end=0.012, timesteps=1000, parameterization=parameterization,
        conditioning_key="crossattn", cond_stage_key="txt", first_stage_key="jpg", image_size=8, channels=4,
        scale_factor=0.18215, use_ema=False,
    ).eval()


def run_sampling(job: dict, inputs: dict) -> dict:
    """The original samplers (DDIMSampler, PLMSSampler, img2img's stochastic_encode + decode; the
    others of original_samplers.py) on small_latent_diffusion, its UNet random. Returns the UNet's
    state dict and the samples."""
    from ldm.models.diffusion.ddim import DDIMSampler
    from ldm.models.diffusion.plms import PLMSSampler

    params = job["params"]
    outputs = {}
    for parameterization in sorted({case["parameterization"] for case in params["cases"]}):
        model = small_latent_diffusion(params, parameterization)
        randomise(model.model, job["seed"])
        for key, value in model.model.diffusion_model.state_dict().items():
            outputs[f"{parameterization}/unet/{key}"] = value
        for case in params["cases"]:
            if case["parameterization"] != parameterization:
                continue
            if case["sampler"] not in ("ddim", "plms", "img2img"):  # DPM-Solver, k-diffusion
                from original_samplers import sample_case

                with torch.no_grad():
                    outputs[f"{case['name']}/sample"] = sample_case(model, case, inputs, job["k_diffusion_root"])
                continue
            sampler = (PLMSSampler if case["sampler"] == "plms" else DDIMSampler)(model)
            uncond = inputs["uncond"] if case["scale"] != 1.0 else None
            torch.manual_seed(case["seed"])
            with torch.no_grad():
                if case["sampler"] == "img2img":
                    sampler.make_schedule(ddim_num_steps=case["steps"], ddim_eta=case["eta"], verbose=False)
                    batch = inputs["x0"].shape[0]
                    z = sampler.stochastic_encode(inputs["x0"], torch.tensor([case["t_enc"]] * batch))
                    sample = sampler.decode(z, inputs["cond"], case["t_enc"], unconditional_guidance_scale=case["scale"],
                                            unconditional_conditioning=uncond)
                else:
                    sample, intermediates = sampler.sample(
                        S=case["steps"], batch_size=inputs["x_T"].shape[0], shape=tuple(inputs["x_T"].shape[1:]),
                        conditioning=inputs["cond"], eta=case["eta"], x_T=inputs["x_T"], verbose=False,
                        unconditional_guidance_scale=case["scale"], unconditional_conditioning=uncond, log_every_t=1)
                    outputs[f"{case['name']}/pred_x0_first"] = intermediates["pred_x0"][1]
            outputs[f"{case['name']}/sample"] = sample
    return outputs


def run_script_noise(job: dict, inputs: dict) -> dict:
    """The x_T the original scripts/txt2img.py feeds its sampler, batch after batch: its loop
    (seed_everything(seed), --fixed_code's start_code, n_iter x the prompt batches,
    sampler.sample(..., x_T=start_code)) over the original DDIMSampler, PLMSSampler and the v2
    scripts' DPMSolverSampler, on run_sampling's small LatentDiffusion. The x_T of each call is the
    first half of the first batch the sampler hands the UNet ([uncond, cond] under guidance). The
    model is built before the seeding: on CUDA, where the original script runs, its CPU
    initialisation never touches the generator the draws come from."""
    from ldm.models.diffusion.ddim import DDIMSampler
    from ldm.models.diffusion.dpm_solver import DPMSolverSampler
    from ldm.models.diffusion.plms import PLMSSampler

    params = job["params"]
    model = small_latent_diffusion(params, "eps")
    randomise(model.model, job["seed"])
    seen, apply_model = [], model.apply_model

    def recording_apply_model(x, t, c, *args, **kwargs):
        if seen and seen[-1] is None:
            seen[-1] = x[: x.shape[0] // 2].clone()
        return apply_model(x, t, c, *args, **kwargs)

    model.apply_model = recording_apply_model
    samplers = {"ddim": DDIMSampler, "plms": PLMSSampler, "dpm_solver": DPMSolverSampler}
    outputs = {}
    for case in params["cases"]:
        n_samples, shape = case["n_samples"], case["shape"]
        sampler = samplers[case["sampler"]](model)
        seen.clear()
        torch.manual_seed(case["seed"])  # pytorch_lightning's seed_everything(seed), for torch
        start_code = torch.randn([n_samples, *shape]) if case["fixed_code"] else None
        with torch.no_grad():
            for _ in range(case["n_iter"]):
                seen.append(None)
                sampler.sample(S=case["steps"], conditioning=inputs["cond"], batch_size=n_samples, shape=shape,
                               verbose=False, unconditional_guidance_scale=7.5,
                               unconditional_conditioning=inputs["uncond"], eta=0.0, x_T=start_code)
        outputs[f"{case['name']}/x_T"] = torch.stack(seen)
    return outputs


def load_saved(job: dict, inputs: dict) -> dict:
    """Load a checkpoint file that OUR code wrote, the way the original scripts do
    (torch.load / safetensors, then LatentDiffusion.load_state_dict(sd, strict=False)), report
    missing and unexpected keys, and run the loaded original modules on the inputs."""
    model_class = import_latent_diffusion()
    params = job["params"]
    path = params["path"]
    extra = {"conditioning_key": "crossattn"}
    if "inpaint" in params:  # v*-inpainting-inference.yaml: LatentInpaintDiffusion, hybrid, no finetune keys
        from ldm.models.diffusion.ddpm import LatentInpaintDiffusion as model_class

        extra = {"conditioning_key": "hybrid", "finetune_keys": None}
    if "depth2img" in params:  # v2-midas-inference.yaml: LatentDepth2ImageDiffusion, hybrid, MiDaS DPT-Hybrid
        from run_midas import stand_in_for_torchvision

        sys.path[1:1] = [job["timm_root"], job["opencv_root"]]
        stand_in_for_torchvision()
        import ldm.modules.midas.api as midas_api
        from ldm.models.diffusion.ddpm import LatentDepth2ImageDiffusion as model_class

        midas_api.ISL_PATHS["dpt_hybrid"] = None  # else it torch.loads midas_models/*.pt when built
        extra = {"conditioning_key": "hybrid", "finetune_keys": None, "depth_stage_config": {
            "target": "ldm.modules.midas.api.MiDaSInference", "params": {"model_type": "dpt_hybrid"}}}
    if "upscale" in params:  # x4-upscaling.yaml: LatentUpscaleDiffusion, hybrid-adm, its noise augmentation
        from ldm.models.diffusion.ddpm import LatentUpscaleDiffusion as model_class

        extra = {"conditioning_key": "hybrid-adm", "low_scale_key": "lr", "low_scale_config": {
            "target": "ldm.modules.diffusionmodules.upscaling.ImageConcatWithNoiseAugmentation",
            "params": {"noise_schedule_config": {"linear_start": 0.0001, "linear_end": 0.02}, "max_noise_level": 350}}}
    if path.endswith(".safetensors"):
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    with without_initialisation():
        model = model_class(
            first_stage_config={"target": "ldm.models.autoencoder.AutoencoderKL",
                                "params": {**params["first_stage"], "lossconfig": {"target": "torch.nn.Identity"}}},
            cond_stage_config={"target": "torch.nn.Identity"},  # the text encoder is loaded below
            unet_config={"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": params["unet"]},
            linear_start=params["linear_start"], linear_end=params["linear_end"], timesteps=1000,
            parameterization=params["parameterization"], cond_stage_key="txt",
            first_stage_key="jpg", image_size=64, channels=4, scale_factor=params["scale_factor"], use_ema=False,
            **extra).eval()
        text_encoder, encode = build_text_encoder(params["text"], job["open_clip_root"])
    text_prefix = "cond_stage_model.transformer." if params["text"] == "clip" else "cond_stage_model.model."
    text_state = {k[len(text_prefix):]: v for k, v in state.items() if k.startswith(text_prefix)}
    rest = {k: v for k, v in state.items() if not k.startswith(text_prefix)}
    missing, unexpected = model.load_state_dict(rest, strict=False)
    if params["text"] == "clip":
        # transformers 5 strips the `text_model.` level itself when it loads such files; so here.
        text_state = {k.removeprefix("text_model."): v for k, v in text_state.items()
                      if k != "text_model.embeddings.position_ids"}
        text_missing, text_unexpected = text_encoder.transformer.load_state_dict(text_state, strict=False)
    else:
        text_missing, text_unexpected = text_encoder.model.load_state_dict(text_state, strict=False)
    report = {"missing": sorted(missing) + sorted(text_missing), "unexpected": sorted(unexpected) + sorted(text_unexpected)}
    json.dump(report, open(params["report"], "w"))
    with torch.no_grad():
        outputs = {
            # (an inpainting model's apply_model wants c_concat too: its UNet is called directly)
            "unet": (model.apply_model(inputs["x"], inputs["t"], inputs["context"])
                     if not {"inpaint", "upscale", "depth2img"} & set(params)
                     else model.model.diffusion_model(inputs["x"], inputs["t"], context=inputs["context"],
                                                      y=inputs.get("y"))),
            "decoded": model.decode_first_stage(inputs["z"]),  # divides by the scale factor first
            "text": encode(inputs["tokens"]),
        }
        if "inpaint" in params:  # the v2 repository's scripts/gradio/inpainting.py, from token ids on
            from original_tasks import run_inpaint

            outputs |= run_inpaint(model, params["inpaint"], inputs, encode)
        if "depth2img" in params:  # the v2 repository's scripts/gradio/depth2img.py, from token ids on
            from original_tasks import run_depth2img

            outputs |= run_depth2img(model, params["depth2img"], inputs, encode)
        if "upscale" in params:  # the v2 repository's scripts/gradio/superresolution.py, from token ids on
            from original_tasks import run_upscale

            outputs |= run_upscale(model, params["upscale"], inputs, encode)
        if "txt2img" in params:  # the original scripts/txt2img.py loop, from token ids on
            from ldm.models.diffusion.ddim import DDIMSampler
            from ldm.models.diffusion.plms import PLMSSampler

            run = params["txt2img"]
            c, uc = encode(inputs["prompt_tokens"]), encode(inputs["negative_tokens"])
            sampler = PLMSSampler(model) if run["sampler"] == "plms" else DDIMSampler(model)
            samples, _ = sampler.sample(S=run["steps"], conditioning=c, batch_size=c.shape[0],
                                        shape=tuple(inputs["x_T"].shape[1:]), verbose=False,
                                        unconditional_guidance_scale=run["scale"], unconditional_conditioning=uc,
                                        eta=run["eta"], x_T=inputs["x_T"])
            images = model.decode_first_stage(samples)
            outputs["txt2img_latent"] = samples
            outputs["txt2img_image"] = torch.clamp((images + 1.0) / 2.0, min=0.0, max=1.0)
        return outputs


def main(job_path: str) -> None:
    import ldm

    job = json.load(open(job_path))
    if not ldm.__file__.startswith(job["original_root"]):
        raise SystemExit(f"imported the wrong `ldm` ({ldm.__file__}); expected the original under {job['original_root']}")
    torch.set_num_threads(job.get("threads", torch.get_num_threads()))
    inputs = load_file(job["inputs"])
    if job["component"] == "load_saved":
        save_file({k: v.contiguous() for k, v in load_saved(job, inputs).items()}, job["outputs"])
        return
    if job["component"] in ("sampling", "script_noise"):
        run = run_sampling if job["component"] == "sampling" else run_script_noise
        save_file({k: v.contiguous() for k, v in run(job, inputs).items()}, job["outputs"])
        return
    if job["component"] == "checkpoint":
        save_file({k: v.contiguous() for k, v in build_checkpoint(job, inputs).items()}, job["outputs"])
        return
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
