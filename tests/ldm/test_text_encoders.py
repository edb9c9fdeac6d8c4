"""Our two text encoders against the references Stable Diffusion used, full size, float32.

v1 (CLIP ViT-L/14): the original FrozenCLIPEmbedder(layer="last") returns transformers'
`CLIPTextModel(...).last_hidden_state`; that model (transformers 5, eager attention) is the
reference here.

v2 (OpenCLIP ViT-H/14): the original FrozenOpenCLIPEmbedder(layer="penultimate") runs open_clip's
resblocks 0..22 and then `ln_final`. open_clip cannot be imported in this environment (it needs
torchvision), so the reference is again transformers' CLIPTextModel, now with the exact GELU and
ViT-H's sizes: `final_layer_norm(hidden_states[-2])` is the same computation (HF's causal mask with
no attention_mask is open_clip's `attn_mask`). Its weights come from the open_clip layout with each
`in_proj_weight` [3W, W] split into q, k, v rows, as torch's nn.MultiheadAttention splits it.

Every tensor is random (seeded), written first in the ORIGINAL checkpoint layout and loaded into
ours through the key table only (`rename_keys` + `load_state`), so a wrong entry cannot pass.
Measured on CPU (torch 2.13, transformers 5.24, 2 threads): output v1 4.0e-07, v2 5.2e-07; every
hidden state v1 <= 4.9e-07, v2 <= 6.1e-07. Tolerance 1e-5.
"""

from __future__ import annotations

import gc
from types import SimpleNamespace

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from checkpoints_convert.keymap import clip_text as clip_keymap
from checkpoints_convert.keymap import openclip_text as openclip_keymap
from checkpoints_convert.remap import load_state, rename_keys
from ldm.config import CLIP_VIT_L_TEXT, OPENCLIP_VIT_H_TEXT
from ldm.modules.clip_text import CLIPTextEncoder
from ldm.modules.openclip_text import OpenCLIPTextEncoder
from tests.reference.original_ldm import relative_error
from tests.reference.parity_record import record_parity
from tokenizer import CLIPTokenizer

TOLERANCE = 1e-5  # max|ours - ref| / max|ref|
LONG_PROMPT = " ".join(f"word{i} a castle on a hill" for i in range(40))  # far past 75 tokens
PROMPTS = ["a photograph of an astronaut riding a horse", "", LONG_PROMPT]
# For the parity report: (module, presets, what the reference computes).
REPORTED = {
    "clip_v1": ("CLIP ViT-L/14 text", "v1", "HF CLIPTextModel last_hidden_state"),
    "openclip_v2": ("OpenCLIP ViT-H/14 text", "v2 (all)", "HF CLIPTextModel, gelu, ln(hidden_states[-2])"),
}

pytestmark = pytest.mark.slow  # full-size CLIP ViT-L and OpenCLIP ViT-H against their references


def random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """A random tensor per name, scaled so that the output is far from trivial.

    Linear weights N(0, 1/fan_in) (activations keep unit scale through 12-24 blocks), LayerNorm
    scales 1 + 0.1 N, biases 0.1 N, embeddings N(0, 1)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        noise = torch.randn(shape, generator=generator)
        if "embedding" in name:
            state[name] = noise
        elif len(shape) == 2:
            state[name] = noise / shape[1] ** 0.5
        elif name.endswith("weight") and ("norm" in name or ".ln_" in name or name.startswith("ln_")):
            state[name] = 1 + 0.1 * noise
        else:
            state[name] = 0.1 * noise
    return state


def token_rows(pad_with: str, seed: int) -> torch.Tensor:
    """[5, 77]: the prompts through our tokenizer (one truncated, one empty), plus 2 random rows."""
    tokenizer = CLIPTokenizer(pad_with=pad_with)
    assert tokenizer.truncated_text(LONG_PROMPT) != ""
    generator = torch.Generator().manual_seed(seed)
    random_ids = torch.randint(0, 49408, (2, 77), generator=generator)
    return torch.cat([tokenizer(PROMPTS), random_ids])


def hf_reference(config, hidden_act: str) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=config.vocab_size, hidden_size=config.width,
            intermediate_size=config.mlp_ratio * config.width, num_hidden_layers=config.layers,
            num_attention_heads=config.heads, max_position_embeddings=config.context_length,
            hidden_act=hidden_act, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
            attn_implementation="eager",  # the plain softmax(q k^T / sqrt(d) + mask) v
        )
    ).eval()


def openclip_layout(config) -> dict[str, tuple[int, ...]]:
    """Names and shapes of open_clip's CLIP with `visual` deleted (open_clip 3.3.0 transformer.py
    TextTransformer + model.py CLIP): what an SD v2 checkpoint holds after `cond_stage_model.model.`."""
    width, hidden = config.width, config.mlp_ratio * config.width
    layout = {
        "token_embedding.weight": (config.vocab_size, width),
        "positional_embedding": (config.context_length, width),
        "ln_final.weight": (width,), "ln_final.bias": (width,),
        "text_projection": (width, 1024),  # ViT-H-14 embed_dim
        "logit_scale": (),
    }
    for i in range(config.layers):
        block = f"transformer.resblocks.{i}."
        layout.update({
            block + "ln_1.weight": (width,), block + "ln_1.bias": (width,),
            block + "attn.in_proj_weight": (3 * width, width), block + "attn.in_proj_bias": (3 * width,),
            block + "attn.out_proj.weight": (width, width), block + "attn.out_proj.bias": (width,),
            block + "ln_2.weight": (width,), block + "ln_2.bias": (width,),
            block + "mlp.c_fc.weight": (hidden, width), block + "mlp.c_fc.bias": (hidden,),
            block + "mlp.c_proj.weight": (width, hidden), block + "mlp.c_proj.bias": (width,),
        })
    return layout


def openclip_to_hf(original: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """open_clip names -> transformers 5 CLIPTextModel names, in_proj split into q, k, v."""
    state = {
        "embeddings.token_embedding.weight": original["token_embedding.weight"],
        "embeddings.position_embedding.weight": original["positional_embedding"],
        "final_layer_norm.weight": original["ln_final.weight"],
        "final_layer_norm.bias": original["ln_final.bias"],
    }
    renames = [("ln_1", "layer_norm1"), ("attn.out_proj", "self_attn.out_proj"), ("ln_2", "layer_norm2"),
               ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")]
    for i in range(layers):
        theirs, hf = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        q_w, k_w, v_w = original[theirs + "attn.in_proj_weight"].chunk(3)
        q_b, k_b, v_b = original[theirs + "attn.in_proj_bias"].chunk(3)
        for name, weight, bias in (("q_proj", q_w, q_b), ("k_proj", k_w, k_b), ("v_proj", v_w, v_b)):
            state[f"{hf}self_attn.{name}.weight"], state[f"{hf}self_attn.{name}.bias"] = weight, bias
        for old, new in renames:
            for param in ("weight", "bias"):
                state[f"{hf}{new}.{param}"] = original[f"{theirs}{old}.{param}"]
    return state


def run_reference(reference: CLIPTextModel, tokens: torch.Tensor, hidden_index: int):
    """-> (final_layer_norm(hidden_states[hidden_index]), all hidden states) of the HF model."""
    with torch.no_grad():
        outputs = reference(input_ids=tokens, output_hidden_states=True)
        hidden = [h.clone() for h in outputs.hidden_states]
        output = reference.final_layer_norm(hidden[hidden_index])
        if hidden_index == -1:  # v1: what FrozenCLIPEmbedder returns
            assert torch.equal(output, outputs.last_hidden_state)
    return output, hidden


@pytest.fixture(scope="module")
def clip_v1():
    """Ours, loaded from a random v1 checkpoint, plus the reference's results (the reference
    model and the checkpoint tensors are freed before the next tower is built)."""
    config = CLIP_VIT_L_TEXT
    reference = hf_reference(config, "quick_gelu")
    hf_keys = set(reference.state_dict())
    # The v1 checkpoint layout: transformers 4.x wrote the `text_model.` level (transformers 5
    # dropped it) and the position_ids buffer.
    shapes = {"text_model." + k: tuple(v.shape) for k, v in reference.state_dict().items()}
    original = random_state(shapes, seed=1)
    reference.load_state_dict({k.removeprefix("text_model."): v for k, v in original.items()}, strict=True)
    original["text_model.embeddings.position_ids"] = torch.arange(77)[None]

    ours = CLIPTextEncoder(config).eval()
    table, ignored = clip_keymap.select_table(config, original)
    kept = {k: v for k, v in original.items() if k not in ignored}
    load_state(ours, rename_keys(kept, table, "v1 text encoder"), "v1 text encoder")

    tokens = token_rows("eot", seed=2)
    output, hidden = run_reference(reference, tokens, hidden_index=-1)
    result = SimpleNamespace(config=config, ours=ours, tokens=tokens, output=output, hidden=hidden,
                             original_keys=set(original), hf_keys=hf_keys)
    del reference, original, kept
    gc.collect()
    return result


@pytest.fixture(scope="module")
def openclip_v2(clip_v1):  # after v1, so that only one reference/ours pair exists at a time
    config = OPENCLIP_VIT_H_TEXT
    original = random_state(openclip_layout(config), seed=3)
    reference = hf_reference(config, "gelu")
    reference.load_state_dict(openclip_to_hf(original, config.layers), strict=True)

    ours = OpenCLIPTextEncoder(config).eval()
    kept = {k: v for k, v in original.items() if k not in openclip_keymap.IGNORED}
    load_state(ours, rename_keys(kept, openclip_keymap.original_to_ours(config), "v2 text encoder"),
               "v2 text encoder")

    tokens = token_rows("zero", seed=4)
    output, hidden = run_reference(reference, tokens, hidden_index=-2)
    result = SimpleNamespace(config=config, ours=ours, tokens=tokens, output=output, hidden=hidden,
                             original_keys=set(original))
    del reference, original, kept
    gc.collect()
    return result


# -- parity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tower", ["clip_v1", "openclip_v2"])
def test_output_matches_reference(tower, request):
    case = request.getfixturevalue(tower)
    assert case.output.std() > 0.1  # a non-trivial reference
    assert case.output.shape == (5, 77, case.config.width)
    with torch.no_grad():
        ours = case.ours(case.tokens)
    error = relative_error(ours, case.output)
    print(f"{tower} text encoder fp32: relative max error {error:.2e}")
    module, presets, reference = REPORTED[tower]
    record_parity(module, presets, "full size, 5 x 77 tokens", "context (output)", reference, error,
                  TOLERANCE)
    assert error <= TOLERANCE, f"{tower}: relative error {error:.2e} > {TOLERANCE:.0e}"


@pytest.mark.parametrize("tower", ["clip_v1", "openclip_v2"])
def test_every_hidden_state_matches_reference(tower, request):
    """All layers + 1 hidden states, the v2 block that SD skips included (checks its weights load)."""
    case = request.getfixturevalue(tower)
    with torch.no_grad():
        _, hidden = case.ours(case.tokens, return_hidden_states=True)
    assert len(hidden) == len(case.hidden) == case.config.layers + 1
    errors = [relative_error(h, ref) for h, ref in zip(hidden, case.hidden)]
    module, presets, _ = REPORTED[tower]
    record_parity(module, presets, "full size, 5 x 77 tokens", f"every hidden state (max of {len(errors)})",
                  "HF CLIPTextModel hidden_states", max(errors), TOLERANCE)
    assert max(errors) <= TOLERANCE, f"{tower}: per-layer relative errors {errors}"


# -- which layer is the output -----------------------------------------------------------------


def test_clip_output_is_final_norm_of_last_hidden_state(clip_v1):
    ours = clip_v1.ours
    with torch.no_grad():
        output, hidden = ours(clip_v1.tokens, return_hidden_states=True)
        assert all(h.shape == (5, 77, 768) for h in hidden) and len(hidden) == 13
        assert torch.equal(output, ours.final_norm(hidden[-1]))
        assert torch.equal(output, ours(clip_v1.tokens))


def test_openclip_output_is_final_norm_of_penultimate_hidden_state(openclip_v2):
    ours = openclip_v2.ours
    with torch.no_grad():
        output, hidden = ours(openclip_v2.tokens, return_hidden_states=True)
        assert all(h.shape == (5, 77, 1024) for h in hidden) and len(hidden) == 25
        assert torch.equal(output, ours.final_norm(hidden[-2]))
        assert torch.equal(output, ours(openclip_v2.tokens))
        assert relative_error(ours.final_norm(hidden[-1]), output) > 0.1  # the last block matters


def test_openclip_plain_forward_never_runs_the_last_block(openclip_v2):
    ours, calls = openclip_v2.ours, []
    handle = ours.blocks[-1].register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            ours(openclip_v2.tokens[:1])
            assert calls == []
            ours(openclip_v2.tokens[:1], return_hidden_states=True)
            assert calls == [1]
    finally:
        handle.remove()


# -- key tables --------------------------------------------------------------------------------


def test_clip_keymap_covers_both_sides(clip_v1):
    table = clip_keymap.original_to_ours(clip_v1.config)
    assert clip_keymap.IGNORED <= clip_v1.original_keys
    assert set(table) == clip_v1.original_keys - clip_keymap.IGNORED
    assert sorted(table.values()) == sorted(clip_v1.ours.state_dict())  # each of ours exactly once


def test_clip_keymap_handles_names_without_text_model(clip_v1):
    """Older v1 files (and transformers 5's own CLIPTextModel) name the keys without `text_model.`."""
    config, ours_state = clip_v1.config, clip_v1.ours.state_dict()
    table = clip_keymap.original_to_ours_without_text_model(config)
    assert set(table) == clip_v1.hf_keys
    legacy = {theirs: ours_state[name] for theirs, name in table.items()}
    legacy["embeddings.position_ids"] = torch.arange(77)[None]
    selected, ignored = clip_keymap.select_table(config, legacy)
    assert ignored == clip_keymap.IGNORED_WITHOUT_TEXT_MODEL == {"embeddings.position_ids"}
    renamed = rename_keys({k: v for k, v in legacy.items() if k not in ignored}, selected, "old v1")
    assert renamed.keys() == ours_state.keys()
    assert all(renamed[k] is ours_state[k] for k in ours_state)


def test_openclip_keymap_covers_both_sides(openclip_v2):
    table = openclip_keymap.original_to_ours(openclip_v2.config)
    assert openclip_keymap.IGNORED == {"text_projection", "logit_scale"} <= openclip_v2.original_keys
    assert set(table) == openclip_v2.original_keys - openclip_keymap.IGNORED
    assert sorted(table.values()) == sorted(openclip_v2.ours.state_dict())
    assert "transformer.resblocks.23.mlp.c_proj.weight" in table  # the skipped block still loads


# -- errors at the boundary --------------------------------------------------------------------


@pytest.mark.parametrize(
    "tokens, received",
    [
        (torch.zeros(2, 77), "[2, 77] with dtype torch.float32"),
        (torch.zeros(2, 76, dtype=torch.long), "[2, 76] with dtype torch.int64"),
        (torch.zeros(77, dtype=torch.long), "[77] with dtype torch.int64"),
    ],
)
def test_bad_tokens_name_expected_and_received(clip_v1, tokens, received):
    with pytest.raises(ValueError) as error:
        clip_v1.ours(tokens)
    message = str(error.value)
    assert "[B, 77]" in message and "integer" in message and received in message


def test_out_of_vocabulary_ids_are_rejected(clip_v1):
    tokens = torch.zeros(1, 77, dtype=torch.long)
    tokens[0, 5] = 49408
    with pytest.raises(ValueError, match=r"0\.\.49407.*49408"):
        clip_v1.ours(tokens)


def test_int32_tokens_are_accepted(clip_v1):
    with torch.no_grad():
        ours = clip_v1.ours
        assert torch.equal(ours(clip_v1.tokens[:2].int()), ours(clip_v1.tokens[:2]))


def test_towers_refuse_the_other_kind_of_config():
    with pytest.raises(ValueError, match="kind 'clip'"):
        CLIPTextEncoder(OPENCLIP_VIT_H_TEXT)
    with pytest.raises(ValueError, match="kind 'openclip'"):
        OpenCLIPTextEncoder(CLIP_VIT_L_TEXT)
