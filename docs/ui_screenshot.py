"""Make docs/ui.png: the browser UI mid-job (python docs/ui_screenshot.py; needs the [serve] extra,
Playwright for Python and Debian's chromium).

A `python -m ldm serve` on the demo model, in a temporary folder; two images generated, then a
third started with many steps so that the progress bar and the live preview show; the page's top
800 pixels, quantised to 64 colours to keep the file small.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from PIL import Image
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen([sys.executable, "-m", "ldm", "serve", "--port", str(port)], cwd=folder,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    requests.get(f"{url}/sdapi/v1/progress", timeout=5)
                    break
                except requests.ConnectionError:
                    time.sleep(0.2)
            shoot(url, Path(folder) / "ui.png")
            picture = Image.open(Path(folder) / "ui.png").convert("RGB").quantize(64)
            picture.save(ROOT / "docs" / "ui.png", optimize=True)
        finally:
            server.terminate()
            server.wait()
    print(ROOT / "docs" / "ui.png")


def shoot(url: str, path: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 820})
        page.goto(url)
        page.wait_for_function("document.getElementById('model-status').textContent.includes(':')")
        for prompt in ("a yellow triangle on a black background", "a red circle on a blue background"):
            page.get_by_label("Prompt", exact=True).fill(prompt)
            page.get_by_label("Width").fill("128")
            page.get_by_label("Height").fill("128")
            page.get_by_role("button", name="Generate").click()
            count = page.locator("#gallery figure").count()
            page.wait_for_function(f"document.querySelectorAll('#gallery figure').length > {count}")
        page.get_by_label("Prompt", exact=True).fill("a green square on a white background")
        page.get_by_label("Steps").fill("400")
        page.get_by_role("button", name="Generate").click()
        page.wait_for_selector("#preview", state="visible")
        time.sleep(1.5)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(path))
        page.get_by_role("button", name="Cancel").click()
        browser.close()


if __name__ == "__main__":
    main()
