// The imagegate playground: plain DOM, no framework, no build step. Talks to /playground/api/*.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const root = $("playground");
  if (!root) return;

  const MAX_UPLOAD = parseInt(root.dataset.maxUpload || "20971520", 10);
  const COMPRESSIBLE = new Set(["jpeg", "webp", "avif"]);
  const MIME = { png: "image/png", jpeg: "image/jpeg", webp: "image/webp", gif: "image/gif", avif: "image/avif" };
  const HISTORY_KEY = "imagegate.playground.history";
  const API = "/playground/api/images/";

  const state = {
    models: [],
    detail: null,
    files: [],
    maskFile: null,
    maskPainted: false,
    controller: null,
    timer: null,
    started: 0,
    estimateTimer: null,
    estimateController: null,
    results: new Map(),
    blobUrls: [],
  };
  window.__lastResult = null;

  // --- helpers ------------------------------------------------------------------------------------

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  function option(value, label) {
    return el("option", { value: value, text: label === undefined ? value : label });
  }

  function fill(select, values, keep) {
    const previous = keep ? select.value : null;
    select.replaceChildren(...values.map((v) => (Array.isArray(v) ? option(v[0], v[1]) : option(v))));
    if (previous && values.some((v) => (Array.isArray(v) ? v[0] : v) === previous)) {
      select.value = previous;
      return true;
    }
    return false;
  }

  function showAlert(message) {
    $("alert").textContent = message || "";
  }

  function mode() {
    return $("mode-edit").checked ? "edit" : "generate";
  }

  function apiKey() {
    const field = $("api-key");
    return field && field.value.trim() ? field.value.trim() : null;
  }

  function headers(json) {
    const result = {};
    if (json) result["content-type"] = "application/json";
    const key = apiKey();
    if (key) result.authorization = "Bearer " + key;
    return result;
  }

  function b64ToBlob(b64, mime) {
    const binary = atob(b64);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return new Blob([bytes], { type: mime });
  }

  async function errorMessage(response) {
    let message = "Request failed with HTTP " + response.status;
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (e) {
      /* not JSON: keep the status line */
    }
    if (response.status === 429) {
      const retry = response.headers.get("retry-after");
      if (retry && !/resets/.test(message)) message += " Retry after " + retry + " s.";
    }
    return message;
  }

  // --- models and controls -----------------------------------------------------------------------

  function supports(model, wanted) {
    return model.modes.includes(wanted === "edit" ? "image-edit" : "text-to-image");
  }

  function fillModels() {
    const select = $("model");
    const wanted = mode();
    const usable = state.models.filter((m) => supports(m, wanted) && m.status !== "retired");
    const previous = select.value || new URLSearchParams(location.search).get("model") || root.dataset.defaultModel;
    select.replaceChildren(...usable.map((m) => option(m.id, m.display_name ? m.display_name + " (" + m.id + ")" : m.id)));
    if (usable.some((m) => m.id === previous)) select.value = previous;
  }

  async function loadModels() {
    try {
      const response = await fetch("/playground/api/models");
      if (!response.ok) throw new Error(await errorMessage(response));
      state.models = (await response.json()).data;
    } catch (e) {
      showAlert("Could not load the models: " + e.message);
      return;
    }
    const wanted = new URLSearchParams(location.search).get("model");
    const model = state.models.find((m) => m.id === wanted);
    if (model && !supports(model, "generate") && supports(model, "edit")) $("mode-edit").checked = true;
    fillModels();
    applyMode();
    await loadModel();
  }

  async function loadModel() {
    const id = $("model").value;
    if (!id) return;
    const response = await fetch("/playground/api/models/" + encodeURIComponent(id));
    if (!response.ok) {
      showAlert(await errorMessage(response));
      return;
    }
    const detail = await response.json();
    if ($("model").value !== id) return;
    state.detail = detail;
    buildControls(detail);
    scheduleEstimate();
  }

  function reference(detail) {
    const providers = detail.providers || [];
    return providers[0] || providers.find((p) => p.provider === "sandbox") || {};
  }

  function buildControls(detail) {
    const offering = reference(detail);
    const sizes = offering.sizes || {};
    const ratioTiers = sizes.kind === "ratio_tiers";
    const presets = (sizes.sizes || []).map((s) => (typeof s === "string" ? [s, s] : [s.size, s.size + " (" + s.name + ")"]));
    const sizeOptions = [];
    if (sizes.auto) sizeOptions.push(["auto", "auto"]);
    if (!sizes.auto && !presets.length) sizeOptions.push(["", "default"]);
    sizeOptions.push(...presets);
    if (sizes.free && !presets.length) {
      for (const s of ["1024x1024", "1536x1024", "1024x1536"]) sizeOptions.push([s, s]);
    }
    fill($("size"), sizeOptions, true);
    $("size-field").hidden = ratioTiers;
    $("custom-size-field").hidden = !sizes.free;
    if (!sizes.free) $("custom-size").value = "";
    $("ratio-field").hidden = !ratioTiers;
    $("resolution-field").hidden = !ratioTiers;
    if (ratioTiers) {
      const ratios = sizes.aspect_ratios || [];
      if (!fill($("aspect-ratio"), ratios, true) && ratios.includes("1:1")) $("aspect-ratio").value = "1:1";
      fill($("resolution"), sizes.resolutions || [], true);
    }
    const qualities = offering.qualities || [];
    $("quality-field").hidden = !qualities.length;
    fill($("quality"), [["", "default"], ...qualities.map((q) => [q, q])], true);
    const backgrounds = offering.backgrounds || [];
    $("background-field").hidden = !backgrounds.length;
    fill($("background"), [["", "default"], ...backgrounds.map((b) => [b, b])], true);
    $("max-images").textContent = String(maxImages());
    updateCompression();
  }

  function maxImages() {
    const detail = state.detail;
    if (!detail) return 1;
    return Math.max(1, detail.max_input_images || reference(detail).max_input_images || 1);
  }

  function updateCompression() {
    const compressible = COMPRESSIBLE.has($("output-format").value);
    $("compression").disabled = !compressible;
    $("compression-value").textContent = $("compression").value;
  }

  function applyMode() {
    const edit = mode() === "edit";
    $("edit-inputs").hidden = !edit;
    $("estimate-note").textContent = edit
      ? "For edits the estimate is for the same parameters without the input images (they may add cost)."
      : "";
  }

  function params() {
    const p = { model: $("model").value, prompt: $("prompt").value, response_format: "b64_json" };
    const offering = state.detail ? reference(state.detail) : {};
    const sizes = offering.sizes || {};
    const custom = $("custom-size").value.trim();
    if (sizes.kind === "ratio_tiers") {
      if ($("aspect-ratio").value) p.aspect_ratio = $("aspect-ratio").value;
      if ($("resolution").value) p.resolution = $("resolution").value;
    } else if (custom && !$("custom-size-field").hidden) {
      p.size = custom;
    } else if ($("size").value) {
      p.size = $("size").value;
    }
    if (!$("quality-field").hidden && $("quality").value) p.quality = $("quality").value;
    if (!$("background-field").hidden && $("background").value) p.background = $("background").value;
    p.output_format = $("output-format").value;
    if (!$("compression").disabled) p.output_compression = parseInt($("compression").value, 10);
    const n = parseInt($("n").value, 10);
    p.n = Number.isFinite(n) ? Math.min(10, Math.max(1, n)) : 1;
    return p;
  }

  // --- estimate ----------------------------------------------------------------------------------

  function scheduleEstimate() {
    clearTimeout(state.estimateTimer);
    state.estimateTimer = setTimeout(estimate, 400);
  }

  async function estimate() {
    if (!$("model").value) return;
    if (state.estimateController) state.estimateController.abort();
    const controller = new AbortController();
    state.estimateController = controller;
    const body = Object.assign(params(), { dry_run: true });
    if (!body.prompt.trim()) body.prompt = "estimate";
    const tbody = $("estimate-table").querySelector("tbody");
    try {
      const response = await fetch(API + "generations", {
        method: "POST",
        headers: headers(true),
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.ok) {
        tbody.replaceChildren(el("tr", {}, [el("td", { colspan: 4, text: await errorMessage(response) })]));
        return;
      }
      const data = await response.json();
      tbody.replaceChildren(
        ...(data.candidates || []).map((c) =>
          el("tr", {}, [
            el("td", { text: c.provider + (c.available === false ? " (unavailable)" : "") }),
            el("td", { text: c.estimated_cost_usd === null || c.estimated_cost_usd === undefined ? "unpriced" : "$" + c.estimated_cost_usd }),
            el("td", { text: c.size || "" }),
            el("td", { text: c.calls === undefined ? "" : String(c.calls) }),
          ])
        )
      );
    } catch (e) {
      if (e.name !== "AbortError") tbody.replaceChildren(el("tr", {}, [el("td", { colspan: 4, text: "Estimate failed: " + e.message })]));
    }
  }

  // --- files and mask ----------------------------------------------------------------------------

  function isImage(bytes) {
    const png = bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47;
    const jpeg = bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
    const tag = String.fromCharCode(...bytes.slice(0, 4)) + String.fromCharCode(...bytes.slice(8, 12));
    return png || jpeg || tag === "RIFFWEBP";
  }

  async function checkFile(file) {
    if (file.size > MAX_UPLOAD) {
      return file.name + " is larger than the " + Math.floor(MAX_UPLOAD / (1024 * 1024)) + " MiB upload limit.";
    }
    const head = new Uint8Array(await file.slice(0, 12).arrayBuffer());
    if (!isImage(head)) return file.name + " is not a PNG, JPEG or WebP image.";
    return null;
  }

  async function addFiles(list) {
    showAlert("");
    const problems = [];
    const accepted = [];
    for (const file of list) {
      const problem = await checkFile(file);
      if (problem) problems.push(problem);
      else accepted.push(file);
    }
    const room = maxImages() - state.files.length;
    if (accepted.length > room) problems.push("This model takes at most " + maxImages() + " input image(s).");
    // Only valid images are kept; a rejected file is named in the alert and never sent.
    state.files.push(...accepted.slice(0, Math.max(0, room)));
    state.fileProblem = problems.join(" ");
    if (problems.length) showAlert(state.fileProblem);
    $("files").value = "";
    renderThumbs();
  }

  function renderThumbs() {
    for (const url of state.thumbUrls || []) URL.revokeObjectURL(url);
    state.thumbUrls = [];
    const items = state.files.map((file, index) => {
      const url = URL.createObjectURL(file);
      state.thumbUrls.push(url);
      const remove = el("button", { type: "button", text: "Remove", "aria-label": "Remove " + file.name });
      remove.addEventListener("click", () => {
        state.files.splice(index, 1);
        renderThumbs();
      });
      return el("li", {}, [el("img", { src: url, alt: file.name }), remove]);
    });
    $("thumbs").replaceChildren(...items);
    setupMask();
  }

  function setupMask() {
    const first = state.files[0];
    $("mask-area").hidden = !first;
    if (!first) return;
    const img = $("mask-base");
    img.onload = () => {
      const canvas = $("mask-canvas");
      canvas.width = img.naturalWidth;
      canvas.height = img.naturalHeight;
      state.maskPainted = false;
    };
    img.src = state.thumbUrls[0];
  }

  function paintAt(event) {
    const canvas = $("mask-canvas");
    const rect = canvas.getBoundingClientRect();
    const x = ((event.clientX - rect.left) * canvas.width) / rect.width;
    const y = ((event.clientY - rect.top) * canvas.height) / rect.height;
    const radius = ((parseInt($("brush").value, 10) / 2) * canvas.width) / rect.width;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "rgb(255, 0, 80)";
    ctx.beginPath();
    if (state.lastPoint) {
      ctx.lineWidth = radius * 2;
      ctx.lineCap = "round";
      ctx.strokeStyle = "rgb(255, 0, 80)";
      ctx.moveTo(state.lastPoint[0], state.lastPoint[1]);
      ctx.lineTo(x, y);
      ctx.stroke();
      ctx.beginPath();
    }
    ctx.arc(x, y, radius, 0, Math.PI * 2);
    ctx.fill();
    state.lastPoint = [x, y];
    state.maskPainted = true;
  }

  function setupCanvas() {
    const canvas = $("mask-canvas");
    let down = false;
    canvas.addEventListener("pointerdown", (e) => {
      down = true;
      state.lastPoint = null;
      if (canvas.setPointerCapture) canvas.setPointerCapture(e.pointerId);
      paintAt(e);
      e.preventDefault();
    });
    canvas.addEventListener("pointermove", (e) => {
      if (down) paintAt(e);
    });
    const stop = () => {
      down = false;
      state.lastPoint = null;
    };
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
    $("mask-clear").addEventListener("click", () => {
      canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
      state.maskPainted = false;
    });
  }

  function maskBlob() {
    // Opaque white everywhere, transparent where painted: the edited area.
    const painted = $("mask-canvas");
    const out = document.createElement("canvas");
    out.width = painted.width;
    out.height = painted.height;
    const ctx = out.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.globalCompositeOperation = "destination-out";
    ctx.drawImage(painted, 0, 0);
    return new Promise((resolve) => out.toBlob(resolve, "image/png"));
  }

  // --- generation --------------------------------------------------------------------------------

  function startProgress() {
    state.started = performance.now();
    $("progress").hidden = false;
    $("status").textContent = "Generating…";
    $("elapsed").textContent = "0.0 s";
    $("generate").disabled = true;
    $("cancel").disabled = false;
    clearInterval(state.timer);
    state.timer = setInterval(() => {
      $("elapsed").textContent = ((performance.now() - state.started) / 1000).toFixed(1) + " s";
    }, 100);
  }

  function stopProgress(status) {
    clearInterval(state.timer);
    state.timer = null;
    $("elapsed").textContent = ((performance.now() - state.started) / 1000).toFixed(1) + " s";
    $("status").textContent = status;
    $("generate").disabled = false;
    $("cancel").disabled = true;
    $("preview").hidden = true;
  }

  function clearResults() {
    for (const url of state.blobUrls) URL.revokeObjectURL(url);
    state.blobUrls = [];
    $("results").replaceChildren();
    $("result-meta").replaceChildren();
    $("decisions").hidden = true;
    $("decisions").querySelector("tbody").replaceChildren();
  }

  async function buildRequest(p, stream) {
    const endpoint = mode() === "edit" ? "edits" : "generations";
    if (stream) {
      p.stream = true;
      p.partial_images = 2;
    }
    if (endpoint === "generations") {
      return { url: API + endpoint, init: { method: "POST", headers: headers(true), body: JSON.stringify(p) } };
    }
    const form = new FormData();
    for (const [key, value] of Object.entries(p)) form.append(key, String(value));
    for (const file of state.files) form.append("image[]", file, file.name);
    if (state.maskFile) form.append("mask", state.maskFile, state.maskFile.name);
    else if (state.maskPainted) form.append("mask", await maskBlob(), "mask.png");
    return { url: API + endpoint, init: { method: "POST", headers: headers(false), body: form } };
  }

  async function validateBeforeSend() {
    if (!$("model").value) return "Choose a model.";
    if (!$("prompt").value.trim()) return "Write a prompt first.";
    if (mode() === "edit") {
      if (!state.files.length) return state.fileProblem || "Choose at least one image to edit.";
      if (state.files.length > maxImages()) return "This model takes at most " + maxImages() + " input image(s).";
      for (const file of state.files.concat(state.maskFile ? [state.maskFile] : [])) {
        const problem = await checkFile(file);
        if (problem) return problem;
      }
    }
    const custom = $("custom-size").value.trim();
    if (custom && !$("custom-size-field").hidden && !/^\d+x\d+$/.test(custom)) return "Custom size must look like 1280x720.";
    return null;
  }

  async function generate() {
    showAlert("");
    const problem = await validateBeforeSend();
    if (problem) {
      showAlert(problem);
      return;
    }
    const p = params();
    const stream = p.n === 1;
    const { url, init } = await buildRequest(Object.assign({}, p), stream);
    const controller = new AbortController();
    state.controller = controller;
    clearResults();
    startProgress();
    try {
      const response = await fetch(url, Object.assign(init, { signal: controller.signal }));
      if (!response.ok) throw new ApiError(await errorMessage(response));
      let result;
      if ((response.headers.get("content-type") || "").startsWith("text/event-stream")) {
        result = await readStream(response);
      } else {
        result = await response.json();
      }
      stopProgress("Done in");
      showResult(result, p);
    } catch (e) {
      if (e.name === "AbortError") {
        stopProgress("Cancelled");
        clearResults();
      } else {
        stopProgress("Failed");
        showAlert(e instanceof ApiError ? e.message : "Request failed: " + e.message);
      }
    } finally {
      if (state.controller === controller) state.controller = null;
    }
  }

  class ApiError extends Error {}

  async function readStream(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let completed = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (value) buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        const event = parseEvent(block);
        if (!event) continue;
        const type = event.data.type || event.name || "";
        if (type === "error" || event.name === "error") {
          const err = event.data.error || event.data;
          throw new ApiError(err.message || "The stream failed.");
        }
        if (type.endsWith(".partial_image")) {
          const mime = MIME[event.data.output_format] || "image/png";
          $("preview-img").src = "data:" + mime + ";base64," + event.data.b64_json;
          $("preview").hidden = false;
          $("status").textContent = "Preview " + ((event.data.partial_image_index || 0) + 1) + "…";
        } else if (type.endsWith(".completed")) {
          completed = event.data;
        }
      }
      if (done) break;
    }
    if (!completed) throw new ApiError("The stream ended without an image.");
    return {
      data: [{ b64_json: completed.b64_json }],
      output_format: completed.output_format,
      size: completed.size,
      imagegate: completed.imagegate || {},
    };
  }

  function parseEvent(block) {
    let name = "";
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (!data.length) return null;
    try {
      return { name: name, data: JSON.parse(data.join("\n")) };
    } catch (e) {
      return null;
    }
  }

  // --- results -----------------------------------------------------------------------------------

  function showResult(result, p) {
    const ext = result.imagegate || {};
    const format = result.output_format || p.output_format || "png";
    const requestId = ext.request_id || "result";
    const images = (result.data || []).map((d) => d.b64_json).filter(Boolean);
    if (!images.length) {
      showAlert("The response carried no image.");
      return;
    }
    window.__lastResult = { request_id: requestId, format: format, images: images, imagegate: ext };
    state.results.set(requestId, { result: result, params: p });
    renderResult(result, p);
    addHistory(requestId, result, p, images[0], format);
  }

  function renderResult(result, p) {
    clearResults();
    const ext = result.imagegate || {};
    const format = result.output_format || p.output_format || "png";
    const requestId = ext.request_id || "result";
    const mime = MIME[format] || "image/png";
    (result.data || []).forEach((d, index) => {
      if (!d.b64_json) return;
      const url = URL.createObjectURL(b64ToBlob(d.b64_json, mime));
      state.blobUrls.push(url);
      const img = el("img", { src: url, alt: "Result " + (index + 1) + " for: " + p.prompt, tabindex: 0, role: "button" });
      img.addEventListener("click", () => enlarge(url));
      img.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          enlarge(url);
        }
      });
      const link = el("a", {
        href: url,
        download: "imagegate-" + requestId + "-" + index + "." + format,
        className: "button",
        text: "Download " + format,
      });
      $("results").append(el("figure", {}, [img, el("figcaption", {}, [link])]));
    });
    renderMeta(ext, result);
  }

  function renderMeta(ext, result) {
    const latency = ext.latency_ms !== undefined ? ext.latency_ms : (ext.attempts || []).reduce((t, a) => t + (a.latency_ms || 0), 0);
    const rows = [
      ["Provider", ext.provider || ""],
      ["Model", (ext.model || "") + (ext.provider_model && ext.provider_model !== ext.model ? " (" + ext.provider_model + ")" : "")],
      ["Cost (USD)", ext.cost_usd === undefined || ext.cost_usd === null ? "unknown" : "$" + ext.cost_usd],
      ["Latency", Math.round(latency) + " ms"],
      ["Size", result.size || ""],
      ["Request id", ext.request_id || ""],
    ];
    const list = el("dl", {}, rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
    const attempts = el("ol", { className: "pg-attempts", "aria-label": "Attempts" },
      (ext.attempts || []).map((a) =>
        el("li", { text: a.provider + ": " + a.status + " in " + Math.round(a.latency_ms || 0) + " ms" + (a.error ? " (" + a.error + ")" : "") })
      )
    );
    $("result-meta").replaceChildren(list, el("h3", { text: "Attempts" }), attempts);
    const decisions = ext.decisions || [];
    const fmt = (v) => (v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));
    $("decisions").querySelector("tbody").replaceChildren(
      ...decisions.map((d) => el("tr", {}, [d.param, d.asked, d.sent, d.handling, d.note].map((v) => el("td", { text: fmt(v) }))))
    );
    $("decisions").hidden = !decisions.length;
  }

  function enlarge(url) {
    const dialog = $("viewer");
    $("viewer-img").src = url;
    if (dialog.showModal) dialog.showModal();
    else dialog.setAttribute("open", "");
    $("viewer-close").focus();
  }

  // --- history -----------------------------------------------------------------------------------

  function loadHistory() {
    try {
      return JSON.parse(sessionStorage.getItem(HISTORY_KEY) || "[]");
    } catch (e) {
      return [];
    }
  }

  function thumbnail(b64, format) {
    return new Promise((resolve) => {
      const img = new Image();
      img.onload = () => {
        const scale = 96 / Math.max(img.naturalWidth, img.naturalHeight);
        const canvas = document.createElement("canvas");
        canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
        canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
        canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
        resolve(canvas.toDataURL("image/jpeg", 0.7));
      };
      img.onerror = () => resolve("");
      img.src = "data:" + (MIME[format] || "image/png") + ";base64," + b64;
    });
  }

  async function addHistory(id, result, p, firstB64, format) {
    const ext = result.imagegate || {};
    const entry = {
      id: id,
      prompt: p.prompt,
      model: p.model,
      mode: mode(),
      params: p,
      provider: ext.provider || "",
      cost: ext.cost_usd === undefined ? null : ext.cost_usd,
      thumb: await thumbnail(firstB64, format),
      at: new Date().toISOString(),
    };
    const history = [entry, ...loadHistory()].slice(0, 50);
    try {
      sessionStorage.setItem(HISTORY_KEY, JSON.stringify(history));
    } catch (e) {
      history.pop();
    }
    renderHistory();
  }

  function renderHistory() {
    const entries = loadHistory();
    $("history").replaceChildren(
      ...entries.map((entry) => {
        const button = el("button", { type: "button", className: "pg-history-entry" }, [
          entry.thumb ? el("img", { src: entry.thumb, alt: "" }) : "",
          el("span", { text: entry.prompt + " · " + entry.model + " · " + (entry.provider || "?") + " · $" + (entry.cost === null ? "?" : entry.cost) }),
        ]);
        button.addEventListener("click", () => showHistory(entry));
        return el("li", {}, [button]);
      })
    );
    if (!entries.length) $("history").append(el("li", { className: "muted", text: "Nothing yet." }));
  }

  function showHistory(entry) {
    showAlert("");
    $("prompt").value = entry.prompt;
    const kept = state.results.get(entry.id);
    if (kept) {
      renderResult(kept.result, kept.params);
      return;
    }
    clearResults();
    if (entry.thumb) $("results").append(el("figure", {}, [el("img", { src: entry.thumb, alt: "Earlier result: " + entry.prompt })]));
    $("result-meta").append(el("p", { className: "muted", text: entry.model + " via " + entry.provider + ", $" + entry.cost + " (thumbnail only: the full image was not kept after a reload)" }));
  }

  // --- wiring ------------------------------------------------------------------------------------

  function wire() {
    $("pg-form").addEventListener("submit", (e) => {
      e.preventDefault();
      generate();
    });
    $("cancel").addEventListener("click", () => {
      if (state.controller) state.controller.abort();
    });
    $("cancel").disabled = true;
    $("estimate").addEventListener("click", estimate);
    for (const radio of [$("mode-generate"), $("mode-edit")]) {
      radio.addEventListener("change", () => {
        fillModels();
        applyMode();
        loadModel();
      });
    }
    $("model").addEventListener("change", loadModel);
    $("output-format").addEventListener("change", updateCompression);
    $("compression").addEventListener("input", updateCompression);
    for (const id of ["size", "custom-size", "aspect-ratio", "resolution", "quality", "background", "output-format", "compression", "n"]) {
      $(id).addEventListener("change", scheduleEstimate);
    }
    $("files").addEventListener("change", () => addFiles(Array.from($("files").files)));
    $("mask-file").addEventListener("change", async () => {
      const file = $("mask-file").files[0] || null;
      state.maskFile = null;
      if (!file) return;
      const problem = await checkFile(file);
      if (problem) {
        showAlert(problem);
        $("mask-file").value = "";
        return;
      }
      state.maskFile = file;
    });
    const drop = $("dropzone");
    drop.addEventListener("dragover", (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      addFiles(Array.from(e.dataTransfer.files));
    });
    drop.addEventListener("click", () => $("files").click());
    drop.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        $("files").click();
      }
    });
    $("viewer-close").addEventListener("click", () => $("viewer").close());
    $("viewer").addEventListener("click", (e) => {
      if (e.target === $("viewer")) $("viewer").close();
    });
    setupCanvas();
  }

  wire();
  renderHistory();
  loadModels();
})();
