// The search page: colour pickers with weights, likeness by clicking a result.
// The query lives in the URL (?color=%23c81e28&weight=60 or ?like=ID), so a link
// reproduces a search; everything comes from this service's API.
"use strict";

const colorsBox = document.getElementById("colors");
const results = document.getElementById("results");
const status = document.getElementById("status");

function addColor(hex = "#1565a1", weight = "") {
  const row = document.createElement("div");
  row.className = "row";
  const picker = Object.assign(document.createElement("input"), { type: "color", value: hex });
  const code = document.createElement("code");
  code.textContent = hex;
  picker.addEventListener("input", () => { code.textContent = picker.value; });
  const weightInput = Object.assign(document.createElement("input"), {
    type: "number", className: "weight", min: "1", placeholder: "weight", value: weight,
  });
  const remove = Object.assign(document.createElement("button"), { type: "button", textContent: "×" });
  remove.title = "Remove this colour";
  remove.addEventListener("click", () => { row.remove(); });
  row.append(picker, code, weightInput, remove);
  colorsBox.append(row);
}

function queryOfForm() {
  const query = new URLSearchParams();
  const rows = [...colorsBox.querySelectorAll(".row")];
  rows.forEach((row) => query.append("color", row.querySelector("input[type=color]").value));
  const weights = rows.map((row) => row.querySelector("input.weight").value.trim());
  if (weights.every((w) => w !== "")) weights.forEach((w) => query.append("weight", w));
  return query;
}

function setForm(query) {
  colorsBox.replaceChildren();
  const colors = query.getAll("color");
  const weights = query.getAll("weight");
  colors.forEach((c, i) => addColor(c.startsWith("#") ? c : `#${c}`, weights[i] || ""));
  if (!colors.length) addColor();
}

function basename(uri) {
  return uri.split(/[\\/]/).filter(Boolean).pop() || uri;
}

function show(found, caption, colorsAsked) {
  results.replaceChildren();
  for (const r of found) {
    const figure = document.createElement("figure");
    figure.className = "result";
    figure.dataset.imageId = r.image_id;
    figure.title = "Find images with a palette like this one";
    const base = `/api/images/${r.image_id}`;
    const redrawn = Object.assign(document.createElement("img"), {
      className: "redrawn", src: `${base}/redrawn.png?size=240`, alt: `${basename(r.uri)} redrawn with its palette`,
    });
    const swatches = Object.assign(document.createElement("img"), {
      className: "swatches", src: `${base}/swatches.png`, alt: "its palette",
    });
    const text = document.createElement("figcaption");
    const score = document.createElement("span");
    score.className = "score";
    const held = r.matched === undefined ? "" : ` · ${r.matched}/${colorsAsked} colours`;
    score.textContent = `${caption} ${r.score.toFixed(3)}${held}`;
    text.append(basename(r.uri), score);
    const chips = document.createElement("div");
    chips.className = "chips";
    for (const hex of r.colors) {
      const chip = document.createElement("span");
      chip.style.background = hex;
      chip.title = hex;
      chips.append(chip);
    }
    figure.append(redrawn, swatches, text, chips);
    figure.addEventListener("click", () => go(new URLSearchParams({ like: r.image_id })));
    results.append(figure);
  }
}

async function run(query) {
  const like = query.get("like");
  const url = like ? `/api/like/${encodeURIComponent(like)}?top=24` : `/api/search?${query}&top=24`;
  if (!like && !query.getAll("color").length) {
    results.replaceChildren();
    status.textContent = "Pick colours, or click an image to find others like it.";
    return;
  }
  status.className = "";
  status.textContent = "Searching…";
  const answer = await fetch(url);
  const body = await answer.json();
  if (!answer.ok) {
    results.replaceChildren();
    status.className = "error";
    status.textContent = body.error;
    return;
  }
  results.dataset.query = query.toString();
  status.textContent = like
    ? `${body.results.length} images nearest ${like} (Earth Mover's distance)`
    : `${body.results.length} images holding these colours (score 0–1)`;
  show(body.results, like ? "distance" : "score", query.getAll("color").length);
}

function go(query) {
  history.pushState(null, "", `/?${query}`);
  setForm(query);
  run(query);
}

document.getElementById("add-color").addEventListener("click", () => addColor("#808080"));
document.getElementById("colors-form").addEventListener("submit", (event) => {
  event.preventDefault();
  go(queryOfForm());
});
window.addEventListener("popstate", () => {
  const query = new URLSearchParams(location.search);
  setForm(query);
  run(query);
});

async function start() {
  const health = await (await fetch("/healthz")).json();
  document.getElementById("summary").textContent =
    `${health.images.toLocaleString()} ${health.kind} palettes`;
  const query = new URLSearchParams(location.search);
  setForm(query);
  run(query);
  const stats = await (await fetch("/api/stats")).json();
  const dominant = document.getElementById("dominant");
  for (const color of stats.dominant) {
    const button = Object.assign(document.createElement("button"), { type: "button", title: color.hex });
    button.style.background = color.hex;
    button.addEventListener("click", () => go(new URLSearchParams({ color: color.hex })));
    dominant.append(button);
  }
}

start();
