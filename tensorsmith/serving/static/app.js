// The page: one section per served model, built from GET /v1/models. Plain DOM, no build step.
"use strict";

const keyInput = document.getElementById("api-key");
keyInput.value = localStorage.getItem("tensorsmith-key") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("tensorsmith-key", keyInput.value);
  load();
});

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (keyInput.value) h["Authorization"] = "Bearer " + keyInput.value;
  return h;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ headers: headers() }, options || {}));
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
  return body;
}

function metricsTable(metrics) {
  const splits = Object.keys(metrics || {}).filter((s) => typeof metrics[s] === "object");
  if (!splits.length) return el("p", { class: "meta", text: "no metrics recorded" });
  const names = [...new Set(splits.flatMap((s) => Object.keys(metrics[s])))]
    .filter((n) => splits.some((s) => typeof metrics[s][n] === "number"));
  const table = el("table", { class: "metrics" });
  table.append(el("tr", {}, el("th", { text: "" }), ...names.map((n) => el("th", { text: n }))));
  for (const s of splits) {
    const cells = names.map((n) => {
      const v = metrics[s][n];
      return el("td", { text: typeof v === "number" ? v.toPrecision(4) : "" });
    });
    table.append(el("tr", {}, el("th", { text: s }), ...cells));
  }
  return table;
}

function tableForm(model, output) {
  const form = el("form", { class: "try", "data-kind": "table" });
  for (const f of model.input.features) {
    let input;
    if (f.type === "category") {
      input = el("select", { name: f.name });
      for (const c of f.categories) input.append(el("option", { value: c, text: c }));
      if (f.example !== null) input.value = f.example;
    } else if (f.type === "binary") {
      input = el("select", { name: f.name });
      for (const c of ["no", "yes"]) input.append(el("option", { value: c, text: c }));
      input.value = f.example ? "yes" : "no";
    } else {
      input = el("input", { name: f.name, type: "number", step: "any", value: f.example ?? "" });
    }
    form.append(el("label", { for: f.name, text: f.name }), input);
  }
  form.append(el("button", { type: "submit", text: "Predict" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const row = {};
    for (const f of model.input.features) {
      const raw = form.elements[f.name].value;
      row[f.name] = f.type === "number" ? (raw === "" ? null : Number(raw)) : raw;
    }
    await predict(model, { rows: [row] }, output);
  });
  return form;
}

function textForm(model, output) {
  const form = el("form", { class: "try", "data-kind": "text" });
  form.append(el("label", { text: "text" }), el("textarea", { name: "text" }));
  form.append(el("button", { type: "submit", text: "Predict" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await predict(model, { texts: [form.elements.text.value] }, output);
  });
  return form;
}

function imageForm(model, output) {
  const form = el("form", { class: "try", "data-kind": "image" });
  form.append(el("label", { text: "image file" }), el("input", { name: "images", type: "file", accept: "image/*" }));
  form.append(el("button", { type: "submit", text: "Predict" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    await predict(model, data, output);
  });
  return form;
}

function windowsForm(model, output) {
  const form = el("form", { class: "try", "data-kind": "windows" });
  const hint = "one JSON object per line, columns: " + model.input.columns.join(", ");
  form.append(el("label", { text: "rows" }), el("textarea", { name: "rows", placeholder: hint }));
  form.append(el("button", { type: "submit", text: "Predict" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const rows = form.elements.rows.value.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
      await predict(model, { rows }, output);
    } catch (err) {
      show(output, err.message, true);
    }
  });
  return form;
}

function show(output, text, error) {
  output.textContent = text;
  output.className = "output" + (error ? " error" : "");
}

async function predict(model, body, output) {
  show(output, "…");
  const isForm = body instanceof FormData;
  try {
    const result = await api(model.endpoint, {
      method: "POST",
      headers: headers(isForm ? {} : { "content-type": "application/json" }),
      body: isForm ? body : JSON.stringify(body),
    });
    const p = result.predictions[0];
    let text = "prediction: " + (typeof p.prediction === "number" ? p.prediction.toPrecision(6) : p.prediction);
    if (p.probabilities) {
      for (const [c, v] of Object.entries(p.probabilities)) text += "\n  " + c + ": " + v.toFixed(3);
    }
    if (!p.prediction && p.prediction !== 0) text = JSON.stringify(result.predictions, null, 1);
    for (const n of result.notes) text += "\nnote: " + n;
    show(output, text + "\n(" + result.model + " version " + result.version + ")");
  } catch (err) {
    show(output, err.message, true);
  }
}

function promptForm(model, output) {
  const form = el("form", { class: "try", "data-kind": "prompt" });
  form.append(el("label", { text: "prompt" }), el("textarea", { name: "prompt" }));
  form.append(el("label", { text: "max tokens" }), el("input", { name: "max_tokens", type: "number", value: "64", min: "1" }));
  form.append(el("label", { text: "temperature" }), el("input", { name: "temperature", type: "number", value: "0.8", step: "0.1", min: "0" }));
  form.append(el("button", { type: "submit", text: "Generate" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {
      model: model.id, prompt: form.elements.prompt.value, stream: true,
      max_tokens: Number(form.elements.max_tokens.value),
      temperature: Number(form.elements.temperature.value),
    };
    show(output, "");
    await stream(body, output);
  });
  return form;
}

async function stream(body, output) {
  // server-sent events over fetch: "data: {...}" lines, ending with "data: [DONE]"
  try {
    const response = await fetch("/v1/completions", {
      method: "POST",
      headers: headers({ "content-type": "application/json" }),
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      const err = await response.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || response.statusText);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    output.textContent = body.prompt;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const events = buffer.split("\n\n");
      buffer = events.pop();
      for (const ev of events) {
        const data = ev.replace(/^data: /, "");
        if (data === "[DONE]") { output.dataset.done = "true"; continue; }
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        for (const choice of chunk.choices) output.textContent += choice.text;
      }
    }
  } catch (err) {
    output.append(el("span", { class: "error", text: "\n" + err.message }));
  }
}

const FORMS = { table: tableForm, text: textForm, image: imageForm, windows: windowsForm, prompt: promptForm };

async function section(model) {
  const output = el("pre", { class: "output" });
  const sec = el("section", { class: "model", id: "model-" + model.id });
  sec.append(
    el("h2", { text: model.id }),
    el("p", { class: "meta", text: `version ${model.version} · ${model.task} · ${model.arch}` }),
    metricsTable(model.metrics),
  );
  const plots = el("div", { class: "plots" });
  for (const p of model.plots) {
    plots.append(el("img", { src: "", alt: p, "data-plot": p }));
  }
  sec.append(plots);
  const card = el("details", { class: "card" }, el("summary", { text: "model card" }), el("pre", {}));
  sec.append(card);
  const make = FORMS[model.input.kind];
  sec.append(el("h3", { text: "Try it" }), make ? make(model, output) : el("p", { text: "no form for this model" }), output);
  loadExtras(model, plots, card);
  return sec;
}

async function loadExtras(model, plots, card) {
  // plots and card through fetch, so that the API key (when set) goes with them
  for (const img of plots.querySelectorAll("img")) {
    const r = await fetch(`/v1/models/${model.id}/plots/${img.dataset.plot}`, { headers: headers() });
    if (r.ok) img.src = URL.createObjectURL(await r.blob());
  }
  const r = await fetch(`/v1/models/${model.id}/card`, { headers: headers() });
  if (r.ok) card.querySelector("pre").textContent = await r.text();
}

async function load() {
  const main = document.getElementById("models");
  const nav = document.getElementById("model-nav");
  try {
    const list = await api("/v1/models");
    main.replaceChildren();
    nav.replaceChildren();
    if (!list.data.length) main.append(el("p", { id: "status", text: "models are loading; reload in a moment" }));
    for (const model of list.data) {
      nav.append(el("a", { href: "#model-" + model.id, text: model.id }));
      main.append(await section(model));
    }
  } catch (err) {
    main.replaceChildren(el("p", { id: "status", class: "error", text: err.message }));
  }
}

load();
