"""The v2 repository's demo pipelines beyond txt2img (inpainting, the x4 upscaler, depth2img), for
run_original.py's "load_saved" job (it runs in the subprocess whose `ldm` is the ORIGINAL one; it
must never import this project's packages). The gradio scripts are not in the wheel (only the
`ldm` package is); their steps are followed here, on tensors, on the wheel's model classes.

inpainting: scripts/gradio/inpainting.py's make_batch_sd and inpaint(), on tensors: the mask
binarised at 0.5, masked image = image * (mask < 0.5), c_concat = [mask resized (nearest) to the
latent, the masked image's first-stage encoding], the unconditional conditioning with the same
c_concat, the original DDIMSampler from the given x_T. The one random draw of that path, the
posterior sample of the masked image's encoding, is handed in (`inpaint_masked_noise`), as the
tests hand the samplers the same noise.
"""

import torch


def run_inpaint(model, run: dict, inputs: dict, encode) -> dict:
    from ldm.models.diffusion.ddim import DDIMSampler
    from ldm.modules.distributions.distributions import DiagonalGaussianDistribution

    n = inputs["inpaint_x_T"].shape[0]
    mask = inputs["inpaint_mask"].clone()  # [1, 1, H, W] in [0, 1], as make_batch_sd reads the PIL mask
    mask[mask < 0.5] = 0
    mask[mask >= 0.5] = 1
    image = inputs["inpaint_image"]  # [1, 3, H, W] in [-1, 1]
    batch = {"image": image.repeat(n, 1, 1, 1), "mask": mask.repeat(n, 1, 1, 1),
             "masked_image": (image * (mask < 0.5)).repeat(n, 1, 1, 1)}
    c, uc_cross = encode(inputs["prompt_tokens"]), encode(inputs["negative_tokens"])
    shape = [model.channels, *inputs["inpaint_x_T"].shape[2:]]

    sample = DiagonalGaussianDistribution.sample
    DiagonalGaussianDistribution.sample = lambda self: self.mean + self.std * inputs["inpaint_masked_noise"]
    try:
        c_cat = []
        for key in model.concat_keys:
            cc = batch[key].float()
            if key != model.masked_image_key:
                cc = torch.nn.functional.interpolate(cc, size=shape[-2:])
            else:
                cc = model.get_first_stage_encoding(model.encode_first_stage(cc))
            c_cat.append(cc)
        c_cat = torch.cat(c_cat, dim=1)
    finally:
        DiagonalGaussianDistribution.sample = sample
    cond = {"c_concat": [c_cat], "c_crossattn": [c]}
    uc_full = {"c_concat": [c_cat], "c_crossattn": [uc_cross]}
    samples, _ = DDIMSampler(model).sample(run["steps"], n, shape, cond, verbose=False, eta=run["eta"],
                                           unconditional_guidance_scale=run["scale"],
                                           unconditional_conditioning=uc_full, x_T=inputs["inpaint_x_T"])
    images = torch.clamp((model.decode_first_stage(samples) + 1.0) / 2.0, min=0.0, max=1.0)
    return {"inpaint_latent": samples, "inpaint_image": images}


def run_upscale(model, run: dict, inputs: dict, encode) -> dict:
    """scripts/gradio/superresolution.py's make_batch_sd, make_noise_augmentation and paint(), on
    tensors: the low-resolution image noised to noise_level by the model's low_scale_model (its one
    random draw handed in as `upscale_noise`), c_concat = [that], c_adm = the noise level, the same
    in the unconditional conditioning, the original DDIMSampler from the given x_T."""
    from ldm.models.diffusion.ddim import DDIMSampler

    n = inputs["upscale_x_T"].shape[0]
    x_low = inputs["upscale_image"].repeat(n, 1, 1, 1).float()  # make_batch_sd's "lr", in [-1, 1]
    noise_level = torch.tensor([run["noise_level"]] * n).long()
    low_scale = model.low_scale_model
    q_sample = low_scale.q_sample
    low_scale.q_sample = lambda x, t, noise=None: q_sample(x, t, noise=inputs["upscale_noise"])
    try:
        x_aug, noise_level = low_scale(x_low, noise_level)
    finally:
        del low_scale.q_sample
    c, uc_cross = encode(inputs["prompt_tokens"]), encode(inputs["negative_tokens"])
    cond = {"c_concat": [x_aug], "c_crossattn": [c], "c_adm": noise_level}
    uc_full = {"c_concat": [x_aug], "c_crossattn": [uc_cross], "c_adm": noise_level}
    shape = [model.channels, *inputs["upscale_x_T"].shape[2:]]
    samples, _ = DDIMSampler(model).sample(run["steps"], n, shape, cond, verbose=False, eta=run["eta"],
                                           unconditional_guidance_scale=run["scale"],
                                           unconditional_conditioning=uc_full, x_T=inputs["upscale_x_T"])
    images = torch.clamp((model.decode_first_stage(samples) + 1.0) / 2.0, min=0.0, max=1.0)
    return {"upscale_latent": samples, "upscale_image": images}


def run_depth2img(model, run: dict, inputs: dict, encode) -> dict:
    """scripts/gradio/depth2img.py's make_batch_sd and paint(), on tensors: the image in [-1, 1]
    through AddMiDaS (OpenCV) and the model's MiDaS, the depth bicubic to the latent and normalised
    per image without an epsilon, c_concat = [that] in both conditionings; z = the image's
    first-stage encoding (its posterior draw handed in as `depth_posterior_noise`); below strength
    1.0 stochastic_encode to t_enc = min(int(strength * steps), steps - 1) with `depth_x_T` as its
    noise, at 1.0 `depth_x_T` itself; the original DDIMSampler's decode over t_enc steps; for each
    of run["strengths"]."""
    from ldm.data.util import AddMiDaS
    from ldm.models.diffusion.ddim import DDIMSampler
    from ldm.modules.distributions.distributions import DiagonalGaussianDistribution

    image = inputs["depth_image"]  # [1, 3, H, W] in [-1, 1]
    x_T = inputs["depth_x_T"]
    n = x_T.shape[0]
    midas_in = AddMiDaS(model_type="dpt_hybrid")({"jpg": image[0].permute(1, 2, 0)})["midas_in"]
    batch = {"jpg": image.repeat(n, 1, 1, 1), "midas_in": torch.from_numpy(midas_in)[None].repeat(n, 1, 1, 1)}
    sample = DiagonalGaussianDistribution.sample
    DiagonalGaussianDistribution.sample = lambda self: self.mean + self.std * inputs["depth_posterior_noise"]
    try:
        z = model.get_first_stage_encoding(model.encode_first_stage(batch["jpg"]))
    finally:
        DiagonalGaussianDistribution.sample = sample
    c, uc_cross = encode(inputs["prompt_tokens"]), encode(inputs["negative_tokens"])
    depth = model.depth_model(batch["midas_in"])
    cc = torch.nn.functional.interpolate(depth, size=z.shape[2:], mode="bicubic", align_corners=False)
    low = torch.amin(cc, dim=[1, 2, 3], keepdim=True)
    high = torch.amax(cc, dim=[1, 2, 3], keepdim=True)
    cc = 2.0 * (cc - low) / (high - low) - 1.0
    cond = {"c_concat": [cc], "c_crossattn": [c]}
    uc_full = {"c_concat": [cc], "c_crossattn": [uc_cross]}
    sampler = DDIMSampler(model)
    sampler.make_schedule(run["steps"], ddim_eta=run["eta"], verbose=False)
    outputs = {"depth_map": depth}
    for strength in run["strengths"]:
        t_enc = min(int(strength * run["steps"]), run["steps"] - 1)
        if strength == 1.0:  # do_full_sample
            z_enc = x_T
        else:
            z_enc = sampler.stochastic_encode(z, torch.tensor([t_enc] * n), noise=x_T)
        samples = sampler.decode(z_enc, cond, t_enc, unconditional_guidance_scale=run["scale"],
                                 unconditional_conditioning=uc_full)
        images = torch.clamp((model.decode_first_stage(samples) + 1.0) / 2.0, min=0.0, max=1.0)
        outputs |= {f"depth2img_latent_{strength}": samples, f"depth2img_image_{strength}": images}
    return outputs
