"""txt2img / img2img contracts on a small random model (the demo size): outputs, sizes, seeds,
strength, warnings and errors. Numerical equality with the original pipeline is tested at full
size in tests/checkpoints_convert/test_save_original.py."""

from __future__ import annotations

import warnings

import pytest
import torch
from PIL import Image

from ldm.config import DEMO
from ldm.pipeline import StableDiffusion
from tests.ldm.one_run import latent_and_image


@pytest.fixture(scope="module")
def sd(tiny_sd) -> StableDiffusion:
    return tiny_sd


def test_outputs_and_default_size(sd):
    images = sd.txt2img("a red circle", steps=2, seed=1, n=2, progress=False)
    assert [im.size for im in images] == [(64, 64)] * 2 and all(isinstance(im, Image.Image) for im in images)
    tensor = sd.txt2img("a red circle", steps=2, seed=1, n=2, output="tensor", progress=False)
    assert tensor.shape == (2, 3, 64, 64) and 0 <= tensor.min() and tensor.max() <= 1
    latent = sd.txt2img("a red circle", steps=2, seed=1, n=2, output="latent", progress=False)
    assert latent.shape == (2, 4, 16, 16)
    # "latent" is the sampler's final latent in x_T's (scaled) space: decoding it / scale gives the images
    decoded = ((sd.vae.decode(latent / DEMO.scale_factor) + 1) / 2).clamp(0, 1)
    assert torch.allclose(decoded, tensor, atol=1e-6)



def test_one_watched_run_gives_what_the_two_outputs_give(sd):
    """tests/ldm/one_run.py, which the full-size parity tests use instead of sampling twice."""
    both = latent_and_image(sd.txt2img, "a red circle", steps=2, seed=1, n=2, progress=False)
    latent = sd.txt2img("a red circle", steps=2, seed=1, n=2, output="latent", progress=False)
    tensor = sd.txt2img("a red circle", steps=2, seed=1, n=2, output="tensor", progress=False)
    assert latent.std() > 0.1 and torch.equal(both["latent"], latent) and torch.equal(both["tensor"], tensor)

def test_each_image_has_its_own_seed(sd):
    batch = sd.txt2img("a cat", steps=3, seed=10, n=3, output="latent", progress=False)
    alone = sd.txt2img("a cat", steps=3, seed=12, n=1, output="latent", progress=False)
    # Batch composition changes only float rounding (measured ~5e-6 relative), not the image.
    assert (batch[2] - alone[0]).abs().max() <= 1e-4 * batch.abs().max()
    again = sd.txt2img("a cat", steps=3, seed=10, n=3, output="latent", progress=False)
    assert torch.equal(batch, again)


def test_x_T_sets_the_size_and_replaces_the_noise(sd):
    x_T = torch.randn(1, 4, 8, 12, generator=torch.Generator().manual_seed(0))
    latent = sd.txt2img("a cat", steps=2, x_T=x_T, output="latent", progress=False)
    assert latent.shape == (1, 4, 8, 12)
    images = sd.txt2img("a cat", steps=2, x_T=x_T, progress=False)
    assert images[0].size == (48, 32)


def test_guidance_scale_one_skips_the_unconditional_pass(sd):
    calls = []
    handle = sd.unet.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        sd.txt2img("a cat", steps=2, guidance_scale=1.0, seed=0, output="latent", progress=False)
        assert calls == [1, 1]
        calls.clear()
        sd.txt2img("a cat", steps=2, guidance_scale=7.5, seed=0, output="latent", progress=False)
        assert calls == [2, 2]  # [uncond, cond] in one batch
    finally:
        handle.remove()


def test_callback_sees_every_step(sd):
    seen = []
    sd.txt2img("a cat", steps=4, seed=0, output="latent", progress=False,
               callback=lambda i, t, x_t, pred_x0: seen.append((i, t, tuple(x_t.shape), tuple(pred_x0.shape))))
    assert [s[:2] for s in seen] == [(0, 751), (1, 501), (2, 251), (3, 1)]
    assert all(s[2] == s[3] == (1, 4, 16, 16) for s in seen)


def test_img2img_strength_zero_is_the_vae_round_trip_and_one_starts_from_noise(sd):
    image = Image.new("RGB", (64, 64), (255, 0, 0))
    zero = sd.img2img(image, "a cat", strength=0.0, steps=10, seed=4, output="latent", progress=False)
    posterior = sd.vae.encode(torch.ones(1, 3, 64, 64) * torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1))
    eps = torch.randn(posterior.mean.shape[1:], generator=torch.Generator().manual_seed(4))
    assert torch.allclose(zero[0], (posterior.mean[0] + posterior.std[0] * eps) * DEMO.scale_factor, atol=1e-5)
    steps = []
    sd.img2img(image, "a cat", strength=1.0, steps=10, seed=4, output="latent", progress=False,
               callback=lambda i, t, x, p: steps.append(t))
    assert steps[0] == 901 and len(steps) == 10  # the whole schedule, from pure noise
    steps.clear()
    sd.img2img(image, "a cat", strength=0.5, steps=10, seed=4, output="latent", progress=False,
               callback=lambda i, t, x, p: steps.append(t))
    assert steps == [401, 301, 201, 101, 1]


def test_img2img_crops_to_the_models_multiple_with_a_warning(sd):
    with pytest.warns(UserWarning, match="cropped to 64x48"):
        images = sd.img2img(Image.new("RGB", (70, 50)), "a cat", strength=0.3, steps=4, progress=False)
    assert images[0].size == (64, 48)


def test_long_prompt_warns_with_the_dropped_words(sd):
    # "w0".."w9" are 2 ids each, "w10".. 3 each (w, digit, digit): 20 + 18 * 3 = 74 ids fit, and
    # the cut falls inside "w28" after its "w": the whole word is quoted.
    prompt = " ".join(f"w{i}" for i in range(40))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sd.txt2img(prompt, steps=1, output="latent", progress=False)
    messages = [str(w.message) for w in caught]
    assert any(m.endswith("dropped: 'w28 w29 w30 w31 w32 w33 w34 w35 w36 w37 w38 w39'") for m in messages), messages


def test_warnings_point_at_the_callers_line_and_quote_at_most_20_dropped_words(sd):
    """Issue 15: the warning pointed into torch's no_grad wrapper, and quoted the whole tail
    (2,000+ characters for a long prompt)."""
    prompt = " ".join(f"w{i}" for i in range(1000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sd.txt2img(prompt, steps=1, output="latent", progress=False)
        sd.img2img(Image.new("RGB", (70, 50)), "a cat", strength=0.3, steps=2, output="latent", progress=False)
    assert [w.filename for w in caught] == [__file__, __file__], [(w.filename, w.lineno) for w in caught]
    dropped = " ".join(f"w{i}" for i in range(28, 48))
    assert str(caught[0].message).endswith(f"these words were dropped: {dropped!r} and 952 more word(s)")
    assert len(str(caught[0].message)) < 300 and "cropped to 64x48" in str(caught[1].message)


def test_images_carry_their_seed_and_parameters_so_a_random_seed_can_be_reproduced(sd, tmp_path):
    """seed=None drew a seed nobody could recover. Each PIL image now has image.info["seed"] and
    the `parameters` text the command line writes; save_sample writes it as the PNG chunk."""
    from ldm.outputs import save_sample

    first, second = sd.txt2img("a cat", steps=2, seed=None, n=2, progress=False)
    seed = first.info["seed"]
    assert isinstance(seed, int) and second.info["seed"] == seed + 1
    again = sd.txt2img("a cat", steps=2, seed=seed, n=2, progress=False)[0]  # same batch: same rounding
    assert again.tobytes() == first.tobytes() and again.info == first.info
    assert first.info["parameters"] == (f"a cat\nNegative prompt: \nSteps: 2, Sampler: DDIM, CFG scale: 7.5, "
                                        f"Seed: {seed}, Size: 64x64, Model: demo, Eta: 0.0")
    with Image.open(save_sample(first, tmp_path)) as saved:
        assert saved.text["parameters"] == first.info["parameters"]
    image = sd.img2img(first, "a dog", strength=0.5, steps=2, seed=7, progress=False)[0]
    assert image.info["seed"] == 7 and image.info["parameters"].endswith("Eta: 0.0, Denoising strength: 0.5")


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"steps": 0}, ValueError, "steps"),
        ({"sampler": "k_euler"}, ValueError, "sampler='k_euler'"),
        ({"output": "png"}, ValueError, "output='png'"),
        ({"guidance_scale": -1.0}, ValueError, "guidance_scale"),
        ({"sampler": "plms", "eta": 0.5}, ValueError, "eta"),
        ({"height": 60}, ValueError, "multiples of 16"),
        ({"prompt": 3}, TypeError, "prompt must be a str"),
        ({"prompt": ["a", "b"], "n": 3}, ValueError, "n=3"),
        ({"x_T": torch.zeros(2, 4, 8, 8)}, ValueError, "x_T must have shape"),
        ({"seed": -1}, ValueError, "seed"),
        # Issue 15: non-finite numbers gave black images; seeds beyond 32 bits.
        ({"guidance_scale": float("nan")}, ValueError, "guidance_scale=nan: must be a finite number"),
        ({"eta": float("inf")}, ValueError, "eta=inf: must be a finite number"),
        ({"seed": 2**32}, ValueError, "seed=4294967296: must be an int in 0..4294967295"),
        ({"seed": 2**32 - 2, "n": 3}, ValueError, "seed=4294967294: must be an int in 0..4294967293"),
    ],
)
def test_bad_arguments_are_named(sd, kwargs, error, words):
    kwargs = {"prompt": "a cat", "steps": 1, "progress": False, **kwargs}
    with pytest.raises(error, match=words.replace("(", r"\(").replace("[", r"\[")):
        sd.txt2img(**kwargs)


def test_img2img_refuses_bad_strength(sd):
    image = Image.new("RGB", (64, 64))
    with pytest.raises(ValueError, match="strength"):
        sd.img2img(image, "a cat", strength=1.5, progress=False)
