"use strict";
// The browser UI: a page over the server's own API (the AUTOMATIC1111 endpoints under /sdapi/v1,
// and /ldm/v1/model for what the loaded model can do). It computes nothing the API does: it
// gathers settings, queues jobs (one runs at a time; the rest wait here), polls /progress for the
// bar and the live preview of pred_x0, and shows what comes back.

const $ = (id) => document.getElementById(id);
const TIMESTEP_SAMPLERS = ["DDIM", "PLMS", "DPM-Solver++ 2M (v2)"];  // Karras's spacing does not apply
const TEXT_MODELS = "a text-to-image checkpoint (v1, v2, v2-v or the demo model)";
// Each mode: the task the loaded model must be for (/ldm/v1/model), and what to load otherwise.
const MODES = {
  txt2img: { task: "txt2img", needs: TEXT_MODELS },
  img2img: { task: "txt2img", needs: TEXT_MODELS },
  inpaint: { task: "inpaint", needs: "an inpainting checkpoint (sd-v1-5-inpainting, 512-inpainting-ema)" },
  depth2img: { task: "depth2img", needs: "the depth checkpoint (512-depth-ema)" },
  upscale: { task: "upscale", needs: "the x4 upscaler (x4-upscaler-ema)" },
};
const state = { queue: [], running: null, lastSeed: null, model: null, nextId: 1, mode: "txt2img", image: null };

// -- talking to the server ---------------------------------------------------------------------

async function call(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new Error(`the server did not answer (${error.message}); is python -m ldm serve still running?`);
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new Error(errorText(response.status, data));
  return data;
}

function errorText(status, data) {
  if (data && typeof data.detail === "string") return data.detail;
  if (data && Array.isArray(data.detail)) {  // FastAPI's own 422: one line per field
    return data.detail.map((d) => `${d.loc.slice(1).join(".")}: ${d.msg}`).join("\n");
  }
  if (data && data.errors) return data.errors;
  return `the server answered HTTP ${status}`;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// -- the model and the controls ----------------------------------------------------------------

async function loadModel() {
  const [models, options, model] = await Promise.all([
    call("GET", "/sdapi/v1/sd-models"), call("GET", "/sdapi/v1/options"), call("GET", "/ldm/v1/model")]);
  const select = $("model");
  select.replaceChildren(...models.map((m) => new Option(m.title, m.title)));
  select.value = options.sd_model_checkpoint;
  state.model = model;
  $("model-status").textContent = `${model.variant}: ${model.task}`;
  for (const id of ["width", "height"]) {
    $(id).step = model.size_multiple;
    $(id).min = model.size_multiple;
  }
  for (const tab of document.querySelectorAll("[data-mode]")) {
    const mode = MODES[tab.dataset.mode];
    tab.disabled = model.task !== mode.task;
    tab.title = tab.disabled ? `the loaded ${model.variant} model is for ${model.task}: choose ${mode.needs}` : "";
  }
  showMode(state.mode);
  if (state.mode === "depth2img") showDepth();
}

// The controls of a mode: every element whose data-for names it; Generate only when the loaded
// model can run it (its tab says which checkpoint it needs otherwise).
function showMode(mode) {
  state.mode = mode;
  for (const tab of document.querySelectorAll("[data-mode]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.mode === mode));
  }
  for (const element of document.querySelectorAll("[data-for]")) {
    element.hidden = !element.dataset.for.split(" ").includes(mode);
  }
  $("depth-figure").hidden = mode !== "depth2img" || !$("depth").getAttribute("src");
  const tab = document.querySelector(`[data-mode="${mode}"]`);
  $("generate").disabled = tab.disabled;
  $("generate").title = tab.disabled ? tab.title : "Ctrl+Enter";
}

async function init() {
  const samplers = await call("GET", "/sdapi/v1/samplers");
  $("sampler").replaceChildren(...samplers.map((s) => new Option(s.name, s.name)));
  $("sampler").value = "DDIM";  // the original scripts' sampler, with their 50 steps and scale 7.5
  await loadModel();
  $("width").value = $("height").value = state.model.image_size;
  samplerChanged();
}

function samplerChanged() {
  const timesteps = TIMESTEP_SAMPLERS.includes($("sampler").value);
  $("karras").disabled = timesteps;
  if (timesteps) $("karras").checked = false;
}

async function switchModel() {
  const title = $("model").value;
  $("model-status").textContent = "loading...";
  try {
    await call("POST", "/sdapi/v1/options", { sd_model_checkpoint: title });
    showError("");
  } catch (error) {
    showError(`Could not load ${title}: ${error.message}`);
  }
  await loadModel();
}

function settings() {
  const number = (id) => Number($(id).value);
  return {
    prompt: $("prompt").value, negative_prompt: $("negative_prompt").value,
    sampler_name: $("sampler").value,
    scheduler: TIMESTEP_SAMPLERS.includes($("sampler").value) ? "automatic" : ($("karras").checked ? "karras" : "uniform"),
    steps: number("steps"), cfg_scale: number("cfg_scale"), width: number("width"), height: number("height"),
    batch_size: number("batch_size"), n_iter: number("n_iter"),
    seed: $("random_seed").checked ? -1 : number("seed"),
    save_images: true, send_images: true,
  };
}

// -> [the endpoint, its body] for the current mode; an Error says what is missing.
function request() {
  const body = settings();
  if (state.mode === "txt2img") return ["/sdapi/v1/txt2img", body];
  if (!state.image) throw new Error("Choose an image first (Image, above, or 'Send to' under a result).");
  body.init_images = [state.image];
  if (state.mode === "img2img" || state.mode === "depth2img") body.denoising_strength = Number($("strength").value);
  if (state.mode === "upscale") body.noise_level = Number($("noise_level").value);
  if (state.mode === "inpaint") {
    // The whole picture, repainted from noise where the mask is white, as painted (no blur).
    Object.assign(body, { mask: maskImage(), inpaint_full_res: false, denoising_strength: 1.0, mask_blur: 0 });
  }
  return ["/sdapi/v1/img2img", body];
}

// Fill the controls from a `parameters` text, as the server's /png-info reads it.
function fillFrom(fields) {
  const set = (id, value) => { if (value !== undefined && value !== "") $(id).value = value; };
  set("prompt", fields.Prompt);
  $("negative_prompt").value = fields["Negative prompt"] || "";
  set("steps", fields.Steps);
  set("cfg_scale", fields["CFG scale"]);
  set("width", fields["Size-1"]);
  set("height", fields["Size-2"]);
  if (fields.Seed !== undefined) {
    $("seed").value = fields.Seed;
    $("random_seed").checked = false;
    $("seed").disabled = false;
  }
  if (fields.Sampler) {
    let name = fields.Sampler;
    const karras = name.endsWith(" Karras") || fields["Schedule type"] === "Karras";
    name = name.replace(/ Karras$/, "");
    if ([...$("sampler").options].some((o) => o.value === name)) $("sampler").value = name;
    samplerChanged();
    if (!$("karras").disabled) $("karras").checked = karras;
  }
}

async function fillFromImage(dataUrl, name) {
  try {
    const answer = await call("POST", "/sdapi/v1/png-info", { image: dataUrl });
    if (!answer.info) throw new Error(`${name} carries no parameters text (not made by this project or AUTOMATIC1111)`);
    fillFrom(answer.parameters);
    showError("");
  } catch (error) {
    showError(`${name}: ${error.message}`);
  }
}

// -- the input image and the mask ----------------------------------------------------------------

function setImage(dataUrl, name = "the image") {
  state.image = null;
  const image = $("init-image");
  image.onerror = () => showError(`${name}: not an image this browser can read (a PNG, JPEG or WebP)`);
  image.onload = () => {
    state.image = dataUrl;
    showError("");
    const canvas = $("mask");
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;  // a new image: a clear mask of its size
    $("canvas-wrap").hidden = false;
    // img2img resizes to width x height: the image's own size, down to the multiple the model takes
    // (the upscaler pads its input itself).
    const multiple = state.mode === "upscale" ? 1 : state.model.size_multiple;
    $("width").value = Math.max(multiple, image.naturalWidth - (image.naturalWidth % multiple));
    $("height").value = Math.max(multiple, image.naturalHeight - (image.naturalHeight % multiple));
    if (state.mode === "depth2img") showDepth();
  };
  image.src = dataUrl;
  $("depth").removeAttribute("src");
  $("depth-figure").hidden = true;
}

async function showDepth() {
  if (!state.image || state.model.task !== "depth2img") return;
  try {
    const answer = await call("POST", "/ldm/v1/depth", { image: state.image });
    $("depth").src = `data:image/png;base64,${answer.image}`;
    $("depth-figure").hidden = state.mode !== "depth2img";
  } catch (error) {
    showError(`The depth map: ${error.message}`);
  }
}

function paint(event) {
  if (!(event.buttons & 1)) return;
  const canvas = $("mask");
  const box = canvas.getBoundingClientRect();
  const scale = canvas.width / box.width;
  const context = canvas.getContext("2d");
  context.globalCompositeOperation = $("eraser").checked ? "destination-out" : "source-over";
  context.fillStyle = "#fff";
  context.beginPath();
  context.arc((event.clientX - box.left) * scale, (event.clientY - box.top) * scale,
    Number($("brush-size").value) * scale / 2, 0, 2 * Math.PI);
  context.fill();
}

// The mask as the API takes it: white where the brush painted (more than half covered: its soft
// edges rounded), black elsewhere, at the image's size.
function maskImage() {
  const painted = $("mask");
  const pixels = painted.getContext("2d").getImageData(0, 0, painted.width, painted.height);
  let touched = false;
  for (let i = 0; i < pixels.data.length; i += 4) {
    const value = pixels.data[i + 3] >= 128 ? 255 : 0;
    touched = touched || value > 0;
    pixels.data.fill(value, i, i + 3);
    pixels.data[i + 3] = 255;
  }
  if (!touched) throw new Error("Paint the part of the image to repaint first (Brush).");
  const mask = document.createElement("canvas");
  mask.width = painted.width;
  mask.height = painted.height;
  mask.getContext("2d").putImageData(pixels, 0, 0);
  return mask.toDataURL("image/png");
}

// -- jobs: a queue here, one at a time on the server -------------------------------------------

function generate() {
  if ($("generate").disabled) return;
  let path, payload;
  try {
    [path, payload] = request();
  } catch (error) {
    showError(error.message);
    return;
  }
  state.queue.push({ id: state.nextId++, path, payload });
  renderQueue();
  pump();
}

function renderQueue() {
  $("queue").replaceChildren(...state.queue.map((job) => {
    const item = document.createElement("li");
    item.textContent = `waiting: "${job.payload.prompt}" (${job.payload.width}x${job.payload.height}, ` +
      `${job.payload.batch_size * job.payload.n_iter} image(s))`;
    return item;
  }));
}

async function pump() {
  if (state.running || state.queue.length === 0) return;
  const job = state.queue.shift();
  state.running = job;
  renderQueue();
  showError("");
  $("running").hidden = false;
  $("preview").hidden = true;
  $("progress").value = 0;
  $("progress-text").textContent = "waiting for the server...";
  const poller = setInterval(pollProgress, 250);
  try {
    const result = await call("POST", job.path, job.payload);
    const info = JSON.parse(result.info);
    addToGallery(result.images.slice(info.index_of_first_image), info);
    state.lastSeed = info.seed;
    $("last-seed").textContent = info.seed;
    $("reuse-seed").disabled = false;
    if (job.cancelled) {
      showError(`Cancelled: ${info.infotexts.length} finished image(s) kept.`);
    }
  } catch (error) {
    showError(error.message);
  } finally {
    clearInterval(poller);
    state.running = null;
    $("running").hidden = true;
    pump();
  }
}

async function pollProgress() {
  let answer;
  try {
    answer = await call("GET", "/sdapi/v1/progress");
  } catch {
    return;  // a missed poll: the next one comes in 250 ms
  }
  const s = answer.state;
  if (!s.job_count) return;
  $("progress").value = answer.progress;
  const eta = answer.eta_relative > 0 ? `, about ${Math.ceil(answer.eta_relative)} s left` : "";
  $("progress-text").textContent = `step ${s.sampling_step}/${s.sampling_steps}, batch ${s.job_no + 1}/${s.job_count}${eta}`;
  if (answer.current_image) {
    const src = `data:image/png;base64,${answer.current_image}`;
    if ($("preview").src !== src) $("preview").src = src;
    $("preview").hidden = false;
  }
}

async function cancel() {
  if (!state.running) return;
  state.running.cancelled = true;
  await call("POST", "/sdapi/v1/interrupt").catch((error) => showError(error.message));
}

// -- results -----------------------------------------------------------------------------------

function addToGallery(images, info) {
  images.forEach((image, i) => {
    const src = `data:image/png;base64,${image}`;
    const text = info.infotexts[i];
    const seed = Number((text.match(/Seed: (\d+),/) || [])[1] ?? info.all_seeds[i]);  // a skipped batch has none
    const figure = document.createElement("figure");
    const img = new Image();
    img.alt = text.split("\n")[0];
    const caption = document.createElement("figcaption");
    const summary = document.createElement("div");
    summary.className = "summary";
    img.onload = () => { summary.textContent = `seed ${seed}, ${img.naturalWidth}x${img.naturalHeight}`; };
    summary.textContent = `seed ${seed}`;
    img.src = src;
    const parameters = document.createElement("pre");
    parameters.textContent = text;
    const actions = document.createElement("div");
    actions.className = "actions";
    const download = document.createElement("a");
    download.href = src;
    download.download = `ldm-${seed}.png`;
    download.textContent = "Download";
    const reuse = document.createElement("button");
    reuse.type = "button";
    reuse.textContent = "Use these settings";
    reuse.addEventListener("click", () => fillFromImage(src, `the image of seed ${seed}`));
    actions.append(download, reuse);
    for (const [mode, label] of [["img2img", "image to image"], ["inpaint", "inpainting"], ["upscale", "upscale"]]) {
      const send = document.createElement("button");
      send.type = "button";
      send.textContent = `Send to ${label}`;
      send.addEventListener("click", () => { showMode(mode); setImage(src); });
      actions.append(send);
    }
    caption.append(summary, parameters, actions);
    figure.dataset.seed = seed;
    figure.append(img, caption);
    $("gallery").prepend(figure);
  });
}

// -- wiring --------------------------------------------------------------------------------------

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

$("generate").addEventListener("click", generate);
for (const tab of document.querySelectorAll("[data-mode]")) {
  tab.addEventListener("click", () => {
    showMode(tab.dataset.mode);
    if (tab.dataset.mode === "depth2img") showDepth();
  });
}
$("image-file").addEventListener("change", async () => {
  const file = $("image-file").files[0];
  if (file) setImage(await readFile(file), file.name);
});
$("mask").addEventListener("pointerdown", paint);
$("mask").addEventListener("pointermove", paint);
$("clear-mask").addEventListener("click", () => {
  const canvas = $("mask");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
});
$("cancel").addEventListener("click", cancel);
$("sampler").addEventListener("change", samplerChanged);
$("model").addEventListener("change", switchModel);
$("random_seed").addEventListener("change", () => { $("seed").disabled = $("random_seed").checked; });
$("reuse-seed").addEventListener("click", () => {
  $("seed").value = state.lastSeed;
  $("random_seed").checked = false;
  $("seed").disabled = false;
});
document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
    event.preventDefault();
    generate();
  }
});
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  document.body.classList.add("dropping");
});
document.addEventListener("dragleave", () => document.body.classList.remove("dropping"));
document.addEventListener("drop", async (event) => {
  event.preventDefault();
  document.body.classList.remove("dropping");
  const file = event.dataTransfer.files[0];
  if (file) await fillFromImage(await readFile(file), file.name);
});

init().catch((error) => showError(`The page could not start: ${error.message}`));
