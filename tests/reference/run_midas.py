"""Run the ORIGINAL MiDaS DPT-Hybrid (stable-diffusion-sdkit 2.1.5's ldm/modules/midas, over timm
0.6.13's vit_base_resnet50_384) and its input transform (ldm/data/util.py AddMiDaS, with OpenCV)
in a subprocess: `python run_midas.py job.json`, started by original_midas.py.

The original imports torchvision (a Compose in api.py; timm imports a few names at import time
that MiDaS never uses); no torchvision wheel matches the CPU torch here, so those names are stood
in for below: Compose really chains, the others are placeholders that fail if ever called.
"""

import importlib.machinery
import json
import sys
import types

import torch
from safetensors.torch import load_file, save_file


class NeverUsed:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__}: a torchvision stand-in that MiDaS should never call")


def stub(name: str, package: bool = False, **names) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
    if package:
        module.__path__ = []
    module.__dict__.update(names)
    sys.modules[name] = module
    return module


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for transform in self.transforms:
            x = transform(x)
        return x


def stand_in_for_torchvision() -> None:
    torchvision = stub("torchvision", package=True)
    torchvision.transforms = stub("torchvision.transforms", package=True, Compose=Compose)
    torchvision.transforms.functional = stub("torchvision.transforms.functional")
    datasets = "CIFAR100 CIFAR10 MNIST QMNIST KMNIST FashionMNIST ImageNet ImageFolder".split()
    torchvision.datasets = stub("torchvision.datasets", **{n: type(n, (NeverUsed,), {}) for n in datasets})
    torchvision.ops = stub("torchvision.ops", package=True)
    torchvision.ops.misc = stub("torchvision.ops.misc", FrozenBatchNorm2d=type("FrozenBatchNorm2d", (NeverUsed,), {}))


def main(job_path: str) -> None:
    job = json.load(open(job_path))
    sys.path[:0] = [job["original_root"], job["timm_root"], job["opencv_root"]]
    stand_in_for_torchvision()
    import ldm
    import timm

    if not ldm.__file__.startswith(job["original_root"]) or not timm.__file__.startswith(job["timm_root"]):
        raise SystemExit(f"imported the wrong ldm or timm ({ldm.__file__}, {timm.__file__})")
    from ldm.data.util import AddMiDaS
    from ldm.modules.midas.midas.dpt_depth import DPTDepthModel
    from random_weights import randomise

    torch.set_num_threads(job["threads"])
    inputs = load_file(job["inputs"])
    torch.manual_seed(0)
    # path=None: the original would torch.load midas_models/dpt_hybrid-midas-501f0c75.pt here.
    model = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True).eval()
    randomise(model, job["seed"])
    with torch.no_grad():
        # randomise() scales a weight by 1/sqrt(fan in), which leaves the position embedding
        # (1 x 577 x 768) at ~1e-3, too small for its resizing to show: N(0, 1) instead.
        generator = torch.Generator().manual_seed(job["seed"] + 1)
        embedding = model.pretrained.model.pos_embed
        embedding.copy_(torch.randn(embedding.shape, generator=generator))
        # The head ends in ReLUs (non_negative=True): with the last convolution's random bias
        # (~N(0, 0.1^2)) most pre-activations of a random network can be negative, and the map
        # is then mostly zeros (the tests' check for a varying map caught such a draw). A bias of
        # +1 keeps the map above zero, where it varies.
        model.scratch.output_conv[4].bias.fill_(1.0)
        outputs = {}
        for name, x in inputs.items():
            if name.startswith("midas_x"):
                # MiDaSInference.forward: the model, then a bicubic resize to the input's own size.
                depth = model(x).unsqueeze(1)
                outputs[name.replace("midas_x", "depth")] = torch.nn.functional.interpolate(
                    depth, size=x.shape[2:], mode="bicubic", align_corners=False)
            if name.startswith("image_hwc"):  # [H, W, 3] in [-1, 1], as make_batch_sd hands it over
                transformed = AddMiDaS(model_type="dpt_hybrid")({"jpg": x})["midas_in"]
                outputs[name.replace("image_hwc", "midas_in")] = torch.from_numpy(transformed)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, job["state_dict"])
    save_file({k: v.contiguous() for k, v in outputs.items()}, job["outputs"])


if __name__ == "__main__":
    main(sys.argv[1])
