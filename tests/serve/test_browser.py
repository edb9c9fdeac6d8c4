"""The browser UI in a real headless browser: Playwright for Python driving Debian's chromium
(Playwright's own browser download is not reachable here; .ci/run installs the package), against
the real server of conftest.py on the demo model. Screenshots of each mode are written beside the
run's temporary folders, to /tmp/pytest-of-<user>/ldm-ui-screenshots/ (kept after a passing run,
replaced by the next; never committed), to be looked at."""

from __future__ import annotations

import base64
import contextlib
import io
import shutil
import time

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from playwright.sync_api import sync_playwright

from samplers import ddim_timesteps

from .conftest import DEMO, DEPTH, INPAINTING, UPSCALER

BROWSERS = ("chromium", "chromium-browser")


@pytest.fixture(scope="module")
def browser():
    executable = next(filter(None, map(shutil.which, BROWSERS)), None)
    assert executable, ("no chromium on PATH: install Debian's package (apt-get install chromium); .ci/run does "
                        "when it is missing")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory):
    folder = tmp_path_factory.getbasetemp().parent / "ldm-ui-screenshots"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url)
    page.wait_for_function("document.getElementById('sampler').options.length > 0 && "
                           "document.getElementById('model-status').textContent.includes(':')")
    yield page
    context.close()
    assert not errors, errors  # no script error in the page


def settings(page, prompt: str, size: int = 64, steps: int = 10) -> None:
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("Width").fill(str(size))
    page.get_by_label("Height").fill(str(size))
    page.get_by_label("Steps").fill(str(steps))


def wait_for_images(page, count: int, timeout: float = 120) -> None:
    page.wait_for_function(f"document.querySelectorAll('#gallery figure').length >= {count}", timeout=timeout * 1000)


def image_sources(page) -> list[str]:
    return page.eval_on_selector_all("#gallery figure img", "images => images.map(i => i.src)")


def test_generate_shows_progress_and_a_live_preview_then_the_image_with_its_seed(page, screenshots):
    assert page.get_by_label("Width").input_value() == "64"  # the demo model's size
    settings(page, "a red circle on a blue background", size=256, steps=30)
    page.get_by_role("button", name="Generate").click()
    previews, texts, deadline = set(), set(), time.monotonic() + 120
    while page.locator("#gallery figure").count() == 0 and time.monotonic() < deadline:
        if page.is_visible("#preview"):
            previews.add(page.get_attribute("#preview", "src"))
        texts.add(page.inner_text("#progress-text"))
        time.sleep(0.05)
    page.screenshot(path=str(screenshots / "txt2img.png"), full_page=True)
    assert len(previews) >= 2, "the preview did not appear and update"
    steps = len(ddim_timesteps(30))  # 31: the original's DDIM stride for 30 steps (1000 // 30 = 33)
    assert any(text.startswith("step ") and f"/{steps}, batch 1/1, about " in text for text in texts), texts
    figure = page.locator("#gallery figure").first
    seed = int(figure.get_attribute("data-seed"))
    page.wait_for_function(f"document.querySelector('#gallery .summary').textContent === 'seed {seed}, 256x256'")
    assert page.inner_text("#last-seed") == str(seed)
    src = image_sources(page)[0]
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    assert image.size == (256, 256) and f"Seed: {seed}," in image.info["parameters"]
    assert figure.get_by_role("link", name="Download").get_attribute("download") == f"ldm-{seed}.png"


def test_the_seed_reused_in_one_click_gives_the_same_bytes(page):
    settings(page, "a green square on a black background")
    page.get_by_role("button", name="Generate").click()
    wait_for_images(page, 1)
    page.get_by_role("button", name="Reuse").click()
    assert not page.is_checked("#random_seed")
    page.get_by_role("button", name="Generate").click()
    wait_for_images(page, 2)
    first, second = image_sources(page)
    assert first == second
    seeds = page.eval_on_selector_all("#gallery figure", "fs => fs.map(f => f.dataset.seed)")
    assert seeds[0] == seeds[1] == page.get_by_label("Seed").input_value()


def test_use_these_settings_and_send_to_fill_the_controls_and_the_input_image(page):
    settings(page, "a white circle on a magenta background", steps=7)
    page.get_by_label("Guidance scale").fill("5.5")
    page.get_by_role("button", name="Generate").click()
    wait_for_images(page, 1)
    seed = page.get_attribute("#gallery figure", "data-seed")
    settings(page, "something else", size=128, steps=30)
    page.get_by_role("button", name="Use these settings").click()
    page.wait_for_function("document.getElementById('steps').value === '7'")
    assert [page.get_by_label(label, exact=True).input_value() for label in ("Prompt", "Steps", "Guidance scale",
                                                                           "Width", "Seed")] == [
        "a white circle on a magenta background", "7", "5.5", "64", seed]
    src = image_sources(page)[0]
    for button, mode in (("Send to inpainting", "inpaint"), ("Send to upscale", "upscale")):
        page.get_by_role("button", name=button).click()
        assert page.get_attribute(f"[data-mode={mode}]", "aria-selected") == "true"
        assert page.get_attribute("#init-image", "src") == src
        assert page.is_disabled("#generate")  # the demo model runs neither: its tooltip says what to load
        assert "choose " in page.get_attribute("#generate", "title")


def test_batch_size_and_count_give_every_image_and_no_grid_in_the_gallery(page):
    settings(page, "a black square on a yellow background", steps=4)
    page.get_by_label("Batch size").fill("2")
    page.get_by_label("Batch count").fill("2")
    page.get_by_label("Random").uncheck()
    page.get_by_label("Seed", exact=True).fill("500")
    page.get_by_role("button", name="Generate").click()
    wait_for_images(page, 4)
    page.wait_for_timeout(500)
    seeds = page.eval_on_selector_all("#gallery figure", "fs => fs.map(f => f.dataset.seed)")
    assert sorted(seeds) == ["500", "501", "502", "503"]  # the server saved a grid too, sent first: left out
    assert page.eval_on_selector_all("#gallery figure img", "is => is.map(i => i.naturalWidth)") == [64] * 4


def test_ctrl_enter_generates(page):
    settings(page, "a yellow triangle on a white background")
    page.get_by_label("Prompt", exact=True).press("Control+Enter")
    wait_for_images(page, 1)


def test_cancel_stops_the_running_job(page):
    settings(page, "a blue circle on a red background", size=256, steps=400)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("#preview", state="visible", timeout=60_000)
    page.get_by_role("button", name="Cancel").click()
    page.wait_for_selector("#running", state="hidden", timeout=60_000)
    assert page.inner_text("#error") == "Cancelled: 0 finished image(s) kept."
    assert page.locator("#gallery figure").count() == 0


def test_a_second_job_waits_in_a_visible_queue_and_both_land_in_order(page, screenshots):
    settings(page, "first: a red square on a white background", size=256, steps=60)
    page.get_by_role("button", name="Generate").click()
    settings(page, "second: a cyan circle on a black background")
    page.get_by_role("button", name="Generate").click()
    assert page.locator("#queue li").all_inner_texts() == [
        'waiting: "second: a cyan circle on a black background" (64x64, 1 image(s))']
    page.screenshot(path=str(screenshots / "queue.png"), full_page=True)
    wait_for_images(page, 2)
    assert page.locator("#queue li").count() == 0
    alts = page.eval_on_selector_all("#gallery figure img", "images => images.map(i => i.alt)")
    assert alts == ["second: a cyan circle on a black background", "first: a red square on a white background"]


def drop(page, data: bytes, name: str, mime: str) -> None:
    """A file dropped onto the page, as a person drags one from their file manager."""
    page.evaluate("""([data, name, mime]) => {
        const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, {type: mime}));
        document.body.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true}));
    }""", [base64.b64encode(data).decode(), name, mime])


def test_dropping_a_png_fills_the_controls_from_its_parameters(page):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a magenta square on a cyan background\nNegative prompt: blurry\nSteps: 23, "
                                "Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 128x96, "
                                "Model hash: 0123456789, Version: v1.10.1")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG", pnginfo=info)
    drop(page, buffer.getvalue(), "a1111.png", "image/png")
    page.wait_for_function("document.getElementById('seed').value === '1234'")
    values = {label: page.get_by_label(label, exact=True).input_value() for label in
              ("Prompt", "Negative prompt", "Steps", "Guidance scale", "Width", "Height", "Seed")}
    assert values == {"Prompt": "a magenta square on a cyan background", "Negative prompt": "blurry", "Steps": "23",
                      "Guidance scale": "6.5", "Width": "128", "Height": "96", "Seed": "1234"}
    assert page.input_value("#sampler") == "DPM++ 2M"
    assert page.is_checked("#karras") and not page.is_checked("#random_seed")


def test_a_bad_upload_and_a_refused_request_show_their_messages(page):
    drop(page, b"just some text", "notes.txt", "text/plain")
    page.wait_for_selector("#error", state="visible")
    assert page.inner_text("#error").startswith("notes.txt: image: not a readable image")
    settings(page, "a red circle", size=72)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function("document.getElementById('error').textContent.startsWith('width: 72')")
    assert "image sizes must be positive multiples of 16" in page.inner_text("#error")
    assert page.is_enabled("#generate")  # the page goes on


def test_a_server_that_does_not_answer_is_a_message_and_the_page_goes_on(page):
    page.route("**/sdapi/v1/txt2img", lambda route: route.abort())  # as if the server had stopped
    settings(page, "a red circle")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("#error", state="visible")
    assert page.inner_text("#error").startswith("the server did not answer (")
    assert page.inner_text("#error").endswith("is python -m ldm serve still running?")
    page.unroute("**/sdapi/v1/txt2img")
    page.get_by_role("button", name="Generate").click()
    wait_for_images(page, 1)


def test_a_model_that_cannot_run_the_mode_disables_it_with_a_tooltip(page):
    page.get_by_label("Model").select_option(label=page.eval_on_selector(
        "#model", f"s => [...s.options].map(o => o.value).find(v => v.startsWith('{INPAINTING}'))"))
    page.wait_for_function("document.getElementById('model-status').textContent.includes('inpaint')", timeout=60_000)
    try:
        assert page.is_disabled("#generate")
        assert "is for inpaint: choose a text-to-image checkpoint" in page.get_attribute("#generate", "title")
    finally:
        page.get_by_label("Model").select_option(label=page.eval_on_selector(
            "#model", f"s => [...s.options].map(o => o.value).find(v => v.startsWith('{DEMO}'))"))
        page.wait_for_function("document.getElementById('model-status').textContent === 'demo: txt2img'",
                               timeout=60_000)
    assert page.is_enabled("#generate")


def test_a_model_that_fails_to_load_is_a_message_and_the_previous_one_stays(page, models):
    broken = models / "broken.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    try:
        page.evaluate("call('POST', '/sdapi/v1/refresh-checkpoints').then(loadModel)")
        page.wait_for_function("[...document.getElementById('model').options].some(o => o.value === 'broken."
                               "safetensors')")
        page.get_by_label("Model").select_option(label="broken.safetensors")
        page.wait_for_selector("#error", state="visible", timeout=60_000)
        assert page.inner_text("#error").startswith("Could not load broken.safetensors: ")
        page.wait_for_function(f"document.getElementById('model').value.startsWith({DEMO!r})")
        assert page.is_enabled("#generate")
    finally:
        broken.unlink()
        page.evaluate("call('POST', '/sdapi/v1/refresh-checkpoints')")


def test_a_phone_sized_window_stacks_settings_above_results(browser, server, screenshots):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(server.url)
    page.wait_for_function("document.getElementById('sampler').options.length > 0")
    controls, work = page.locator("#controls").bounding_box(), page.locator("#work").bounding_box()
    assert controls["x"] == work["x"] and work["y"] >= controls["y"] + controls["height"]
    assert controls["width"] <= 390 and page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(screenshots / "phone.png"), full_page=True)
    context.close()


def choose_model(page, name: str) -> None:
    title = page.eval_on_selector("#model", f"s => [...s.options].map(o => o.value).find(v => v.startsWith('{name}'))")
    page.get_by_label("Model").select_option(label=title)
    # the title gains the file's hash once it is loaded
    page.wait_for_function(f"document.getElementById('model').value.startsWith({name!r}) && "
                           "!document.getElementById('model-status').textContent.startsWith('loading')",
                           timeout=60_000)


@contextlib.contextmanager
def in_mode(page, model: str, tab: str, picture):
    """`model` selected in the picker, the `tab` mode open with `picture` as its input image; the
    demo model selected again afterwards (the server is shared by the tests)."""
    choose_model(page, model)
    try:
        page.get_by_role("tab", name=tab).click()
        page.set_input_files("#image-file", picture)
        page.wait_for_selector("#init-image", state="visible")
        yield
    finally:
        choose_model(page, DEMO)


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "picture.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def parameters_of(page, index: int = 0) -> str:
    return page.eval_on_selector_all("#gallery figure pre", "pres => pres.map(p => p.textContent)")[index]


def test_image_to_image_from_a_gallery_image(page, screenshots):
    settings(page, "a red circle on a blue background")
    page.get_by_role("button", name="Generate").click()
    wait_for_images(page, 1)
    page.get_by_role("button", name="Send to image to image").click()
    assert page.get_attribute("[data-mode=img2img]", "aria-selected") == "true"
    assert page.is_visible("#init-image") and page.is_hidden("#mask")
    page.get_by_label("Strength").fill("0.5")
    page.get_by_label("Prompt", exact=True).fill("a green square on a blue background")
    page.get_by_role("button", name="Generate").click()
    wait_for_images(page, 2)
    page.screenshot(path=str(screenshots / "img2img.png"), full_page=True)
    assert "Denoising strength: 0.5" in parameters_of(page)


def drag(page, selector: str, start: tuple[float, float], end: tuple[float, float]) -> None:
    """The mouse pressed at `start` and moved to `end` over the element (fractions of its box)."""
    box = page.locator(selector).bounding_box()
    at = [(box["x"] + box["width"] * x, box["y"] + box["height"] * y) for x, y in (start, end)]
    page.mouse.move(*at[0])
    page.mouse.down()
    page.mouse.move(*at[1], steps=10)
    page.mouse.up()


def mask_pixels(page) -> np.ndarray:
    """The mask the page would send (its maskImage()), as grey levels [H, W]."""
    data = page.evaluate("maskImage()").split(",", 1)[1]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L"))


def test_paint_a_mask_and_inpaint_on_an_inpainting_checkpoint(page, picture, screenshots):
    with in_mode(page, INPAINTING, "Inpainting", picture):
        assert page.is_disabled("[data-mode=txt2img]") and page.is_enabled("[data-mode=inpaint]")
        assert page.is_visible("#mask")
        page.get_by_role("button", name="Generate").click()
        assert page.inner_text("#error") == "Paint the part of the image to repaint first (Brush)."
        page.get_by_label("Brush size").fill("64")  # display pixels: 64 / 6 = 10.7 of the 64x64 image's
        page.locator("#mask").scroll_into_view_if_needed()  # Generate, lower down, scrolled the page
        drag(page, "#mask", (0.3, 0.3), (0.7, 0.7))
        pixels = mask_pixels(page)
        assert pixels.shape == (64, 64) and pixels[32, 32] == 255 and pixels[2, 60] == 0
        page.get_by_label("Eraser").check()  # erase across the middle: the centre is kept again
        drag(page, "#mask", (0.2, 0.5), (0.8, 0.5))
        pixels = mask_pixels(page)
        assert pixels[32, 32] == 0 and pixels[22, 22] == 255
        page.get_by_role("button", name="Generate").click()
        wait_for_images(page, 1)
        page.screenshot(path=str(screenshots / "inpaint.png"), full_page=True)
        assert "Sampler: DDIM" in parameters_of(page)


def test_depth_to_image_shows_the_depth_map(page, picture, screenshots):
    with in_mode(page, DEPTH, "Depth to image", picture):
        page.wait_for_selector("#depth", state="visible", timeout=60_000)
        assert page.evaluate("document.getElementById('depth').naturalWidth") > 0
        page.get_by_role("button", name="Generate").click()
        wait_for_images(page, 1)
        page.screenshot(path=str(screenshots / "depth2img.png"), full_page=True)
        assert "Denoising strength: 0.75" in parameters_of(page)


def test_upscale_makes_the_image_four_times_as_large(page, picture, screenshots):
    with in_mode(page, UPSCALER, "Upscale", picture):
        page.get_by_label("Noise level").fill("30")
        page.get_by_label("Steps").fill("5")
        page.get_by_role("button", name="Generate").click()
        wait_for_images(page, 1)
        page.wait_for_function("document.querySelector('#gallery .summary').textContent.endsWith('256x256')")
        page.screenshot(path=str(screenshots / "upscale.png"), full_page=True)


def test_a_file_that_is_not_an_image_is_refused_in_the_page(page, tmp_path):
    page.get_by_role("tab", name="Image to image").click()
    (tmp_path / "notes.txt").write_text("not an image")
    page.set_input_files("#image-file", tmp_path / "notes.txt")
    page.wait_for_selector("#error", state="visible")
    assert page.inner_text("#error") == "notes.txt: not an image this browser can read (a PNG, JPEG or WebP)"
    page.get_by_role("button", name="Generate").click()
    assert page.inner_text("#error").startswith("Choose an image first")
