"""A real `python -m ldm serve` process on a free local port, for the API tests.

The models folder may hold the demo-sized inpainting, upscaler and depth models of tests/ldm/tiny_models.py
(random weights): their variants are not ones the loader detects from the weights (the demo's
context width with 9, 7 or 5 input channels), so the process registers their presets and tells their
variants from the same shapes the loader reads, before the command line's main runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
from checkpoints_convert import load, detect
from ldm.config import PRESETS
from tests.ldm.tiny_models import TINY
PRESETS.update(TINY)
detected = load.variant_from_weights

def variant_from_weights(shapes, path):
    contexts = [s for k, s in shapes.items() if detect.CROSS_ATTENTION_KEY.fullmatch(k)]
    if contexts and contexts[0][1] == 96:
        tiny = {9: "demo-inpainting", 7: "demo-upscaler", 5: "demo-depth"}.get(shapes[detect.UNET_IN][1])
        if tiny:
            return tiny, "tests: a demo-sized " + tiny
    return detected(shapes, path)

load.variant_from_weights = variant_from_weights
from ldm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m ldm serve --port P ARGS` in `cwd`; its stderr (job log, uvicorn's log) in cwd/server.log."""

    def __init__(self, cwd: Path, *args: str, auth: tuple[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / "server.log"
        # The test process's environment (OMP_NUM_THREADS too): the same threads give the same bits.
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-c", SCRIPT, "serve", "--port", str(self.port), *args],
                                            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready(auth)

    def wait_ready(self, auth, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.log.read_text()}")
            try:
                requests.get(f"{self.url}/sdapi/v1/progress", auth=auth, timeout=5)
                return
            except requests.ConnectionError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not answer in {timeout} s:\n{self.log.read_text()}")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> str:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.log.read_text()
