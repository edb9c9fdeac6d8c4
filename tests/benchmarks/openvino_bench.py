"""Benchmark: our UNet in torch against the same module converted to OpenVINO, on the CPU.

    python tests/benchmarks/openvino_bench.py [--repeats 2] [--threads 1] [--latent 32]

Needs `pip install openvino` (a peer measured here, never a dependency of the project).

OpenVINO's runtime is what CPU users pick today for speed (FastSD CPU); its time on OUR UNet is the
bar to beat. The model: the full-size SD v1 UNet (`ldm.modules.unet.UNet`), every parameter
N(0, 0.02) from a seeded generator (unet_vae_bench.py's build and inputs: batch 2, context
[2, 77, 768], timestep 999), one forward at `--latent` x `--latent` latents.

- torch: ours as it runs in the library (float32, `torch.inference_mode`).
- openvino: `openvino.convert_model(our UNet, example_input=...)` (a trace of the same module with
  the same weights), compiled for "CPU" with `INFERENCE_PRECISION_HINT` f32, then bf16. OpenVINO
  uses bfloat16 only where the CPU has it (AVX512-BF16 or AMX: its `OPTIMIZATION_CAPABILITIES`
  lists BF16); elsewhere the hint leaves f32, and the script prints the capabilities to say which.
  The worker also runs ours on the same input and prints the largest difference of OpenVINO's
  output from ours, relative to ours' largest value (is the converted model the same function?).

Each worker is a fresh process (the script re-invokes itself with `--worker NAME`), which times one
warm-up call and then `--calls` calls, keeping the best. The parent alternates the workers (ABBA)
over `--repeats` rounds and prints the best time of each, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

WORKERS = ("torch-f32", "openvino-f32", "openvino-bf16")


def worker(name: str, threads: int, latent: int, calls: int) -> dict:
    import torch

    import unet_vae_bench as shapes

    shapes.LATENT_SIZE = latent
    torch.set_num_threads(threads)
    with torch.device("meta"):
        unet = shapes.build("unet-ours")
    unet = unet.to_empty(device="cpu").eval()
    generator = torch.Generator().manual_seed(shapes.SEED)
    with torch.no_grad():
        for tensor in [*unet.parameters(), *unet.buffers()]:
            if tensor.is_floating_point():
                tensor.normal_(0.0, shapes.INIT_STD, generator=generator)
    inputs = shapes.make_inputs("unet-ours", "cpu")
    result = {"name": name, "threads": threads, "latent": latent}
    with torch.inference_mode():
        ours = unet(*inputs)
    if name == "torch-f32":
        run = lambda: unet(*inputs)  # noqa: E731
    else:
        import openvino as ov

        start = time.perf_counter()
        with torch.no_grad():
            converted = ov.convert_model(unet, example_input=inputs)
        core = ov.Core()
        hint = name.removeprefix("openvino-")
        compiled = core.compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                         "INFERENCE_NUM_THREADS": threads})
        result["convert_and_compile_s"] = round(time.perf_counter() - start, 1)
        result["capabilities"] = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        result["precision_used"] = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        arrays = [tensor.numpy() for tensor in inputs]
        run = lambda: compiled(arrays)[0]  # noqa: E731
        out = torch.from_numpy(run())
        result["max_rel_diff_to_torch"] = float((out - ours).abs().max() / ours.abs().max())
    with torch.inference_mode():
        run()  # warm-up
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    result["seconds"] = round(min(times), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads, args.latent, args.calls)))
        return
    best: dict[str, float] = {}
    for round_ in range(args.repeats):
        for name in (WORKERS if round_ % 2 == 0 else WORKERS[::-1]):
            command = [sys.executable, __file__, "--worker", name, "--threads", str(args.threads),
                       "--latent", str(args.latent), "--calls", str(args.calls)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
            if done.returncode != 0:
                raise RuntimeError(f"{name} failed: {done.stderr[-2000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps(result), flush=True)
            best[name] = min(best.get(name, float("inf")), result["seconds"])
    print(", ".join(f"{name} {seconds:.2f} s" for name, seconds in best.items()))
    print(f"torch-f32 / openvino-f32 {best['torch-f32'] / best['openvino-f32']:.3f}; "
          f"torch-f32 / openvino-bf16 {best['torch-f32'] / best['openvino-bf16']:.3f}")


if __name__ == "__main__":
    main()
