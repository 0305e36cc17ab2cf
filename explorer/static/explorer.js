// The explorer's page: a drawing pad whose every change goes to /api/think, and what comes back drawn.
// Plain JavaScript, nothing loaded from elsewhere. Arrays arrive as base64 (float32 or uint8 grey).
"use strict";

const PAD_SCALE = 112;      // the pad is sent at 112x112: plenty for a 20x20 box, 12.5 kB a request
const STROKE_WIDTH = 18;    // in pad pixels (280 wide): about MNIST's stroke once fitted in 20x20
const DEBOUNCE_MS = 25;     // an update at most this long after the last pointer move
const MAP_PX = 84;          // every feature map is shown this big, so positions line up across layers

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const padContext = pad.getContext("2d");

const state = {
  strokes: [],              // each a list of {x, y} in pad pixels
  drawing: false,
  digit: null,              // {index, label, image} when a test digit is the input
  unit: null,               // {layer, unit} clicked
  inFlight: false,
  again: false,
  timer: null,
  lastThink: null,
};
// For the benchmark, the tests and a curious console: every update's timings, the last answers,
// and whether every change so far has been answered and shown.
window.explorer = {
  timings: [],
  last: {think: null, unit: null},
  settled: () => !state.inFlight && !state.again && state.timer === null && !state.drawing,
};

// ----------------------------------------------------------------------------- messages

function say(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

async function api(path, body) {
  let response;
  try {
    response = await fetch(path, body === undefined ? {} :
      {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  } catch (error) {
    throw new Error(`The explorer's server at ${location.origin} is not answering: is make explore still running?`);
  }
  let data;
  try {
    data = await response.json();
  } catch (error) {
    throw new Error(`The server answered ${response.status} without JSON for ${path}.`);
  }
  if (!response.ok) throw new Error(data.error || `The server answered ${response.status} for ${path}.`);
  return data;
}

// ----------------------------------------------------------------------------- arrays and pictures

function bytes(base64) {
  const text = atob(base64);
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

function floats(payload) {
  return {shape: payload.shape, values: new Float32Array(bytes(payload.data).buffer)};
}

function toBase64(array) {
  let text = "";
  for (let i = 0; i < array.length; i += 8192) text += String.fromCharCode.apply(null, array.subarray(i, i + 8192));
  return btoa(text);
}

// Paint width x height values from `values` (starting at `offset`) on a canvas; colour(v) gives [r, g, b].
function paint(canvas, width, height, values, offset, colour) {
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    const [r, g, b] = colour(values[offset + i]);
    image.data.set([r, g, b, 255], i * 4);
  }
  context.putImageData(image, 0, 0);
}

const greyColour = (v) => [v, v, v];
// Activations after a ReLU: black at zero, through orange to pale yellow at the layer's maximum.
const heat = (scale) => (v) => {
  const t = Math.max(0, Math.min(1, v / scale));
  return [255 * Math.min(1, 1.6 * t), 255 * Math.max(0, 1.6 * t - 0.6), 200 * Math.max(0, 2.5 * t - 1.5)];
};
// Signed values (gradients, logits): red positive, blue negative, black at zero.
const signed = (scale) => (v) => {
  const t = Math.max(-1, Math.min(1, v / scale));
  return t >= 0 ? [255 * t, 60 * t, 40 * t] : [40 * -t, 110 * -t, 255 * -t];
};

function maxAbs(values) {
  let m = 0;
  for (const v of values) m = Math.max(m, Math.abs(v));
  return m || 1;
}

function greyDigit(canvas, base64) {
  paint(canvas, 28, 28, bytes(base64), 0, greyColour);
}

function box(canvas, [top, left, bottom, right], colour) {
  const context = canvas.getContext("2d");
  context.strokeStyle = colour;
  context.lineWidth = 1;
  context.strokeRect(left + 0.5, top + 0.5, right - left, bottom - top);
}

function thumb(entry, caption, predicted) {
  const item = document.createElement("div");
  item.className = "thumb";
  if (predicted !== undefined) item.classList.add(entry.label === predicted ? "same" : "other");
  const canvas = document.createElement("canvas");
  greyDigit(canvas, entry.image);
  const text = document.createElement("span");
  text.textContent = caption;
  item.append(canvas, text);
  item.title = `test digit #${entry.index}, a ${entry.label}`;
  return item;
}

// ----------------------------------------------------------------------------- the pad

function point(event) {
  const rect = pad.getBoundingClientRect();
  return {x: (event.clientX - rect.left) * pad.width / rect.width, y: (event.clientY - rect.top) * pad.height / rect.height};
}

function redrawPad() {
  padContext.fillStyle = "#000";
  padContext.fillRect(0, 0, pad.width, pad.height);
  if (state.digit) {
    const digit = document.createElement("canvas");
    greyDigit(digit, state.digit.image);
    padContext.imageSmoothingEnabled = false;
    padContext.drawImage(digit, 0, 0, pad.width, pad.height);
    return;
  }
  padContext.strokeStyle = "#fff";
  padContext.fillStyle = "#fff";
  padContext.lineWidth = STROKE_WIDTH;
  padContext.lineCap = "round";
  padContext.lineJoin = "round";
  for (const stroke of state.strokes) {
    padContext.beginPath();
    padContext.moveTo(stroke[0].x, stroke[0].y);
    for (const p of stroke.slice(1)) padContext.lineTo(p.x, p.y);
    if (stroke.length === 1) padContext.lineTo(stroke[0].x + 0.1, stroke[0].y);  // a dot
    padContext.stroke();
  }
}

function padPixels() {
  const small = document.createElement("canvas");
  small.width = small.height = PAD_SCALE;
  const context = small.getContext("2d");
  context.imageSmoothingEnabled = true;
  context.drawImage(pad, 0, 0, PAD_SCALE, PAD_SCALE);
  const rgba = context.getImageData(0, 0, PAD_SCALE, PAD_SCALE).data;
  const grey = new Uint8Array(PAD_SCALE * PAD_SCALE);
  for (let i = 0; i < grey.length; i++) grey[i] = rgba[i * 4];
  return {width: PAD_SCALE, height: PAD_SCALE, pixels: toBase64(grey)};
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  if (state.digit) { state.digit = null; markChosen(null); }
  state.drawing = true;
  state.strokes.push([point(event)]);
  redrawPad();
  schedule();
});
pad.addEventListener("pointermove", (event) => {
  if (!state.drawing) return;
  const stroke = state.strokes[state.strokes.length - 1];
  // Coalesced events: every point the pointer passed since the last frame, not just the last one.
  const coalesced = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const e of coalesced.length ? coalesced : [event]) stroke.push(point(e));
  redrawPad();
  schedule();
});
for (const name of ["pointerup", "pointercancel"]) {
  pad.addEventListener(name, () => {
    if (!state.drawing) return;
    state.drawing = false;
    schedule();
  });
}

$("clear").addEventListener("click", () => { state.strokes = []; state.digit = null; markChosen(null); redrawPad(); schedule(); });
$("undo").addEventListener("click", () => { state.strokes.pop(); redrawPad(); schedule(); });

// ----------------------------------------------------------------------------- updates

function currentInput() {
  if (state.digit) return {digit: state.digit.index};
  if (state.strokes.length === 0) return null;
  return {drawing: padPixels()};
}

// Debounced, and never more than one request in flight: a change during one is sent when it returns.
function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(update, DEBOUNCE_MS);
}

async function update() {
  state.timer = null;
  if (state.inFlight) { state.again = true; return; }
  const input = currentInput();
  if (!input) {
    showEmpty();
    return;
  }
  state.inFlight = true;
  const started = performance.now();
  try {
    const body = {model: $("model").value, neighbour_layer: $("neighbour-layer").value || undefined, k: 8, ...input};
    // The model beside it may be missing: its failure is a message, the main answer still shows.
    let besideFailed = null;
    const beside = $("compare-on").checked
      ? api("/api/think", {model: $("compare").value, neighbours: false, ...input})
          .catch((error) => { besideFailed = error; return null; })
      : Promise.resolve(null);
    const [main, compared] = await Promise.all([api("/api/think", body), beside]);
    const roundTrip = performance.now() - started;
    window.explorer.timings.push({round_trip_ms: roundTrip, server_ms: main.server_ms});
    $("timing").textContent = `update ${roundTrip.toFixed(0)} ms (server ${main.server_ms.toFixed(0)} ms)`;
    say(besideFailed ? `Beside it: ${besideFailed.message}` : "");
    state.lastThink = window.explorer.last.think = main;
    show(main, compared);
    if (state.unit && !state.drawing) await showUnit();
  } catch (error) {
    say(error.message);
  } finally {
    state.inFlight = false;
    if (state.again) { state.again = false; schedule(); }
  }
}

function showEmpty() {
  say("The pad is empty: draw a digit, or pick a test digit below.", "info");
  $("input-note").textContent = "Draw with the mouse, a pen or a finger, or pick a test digit.";
}

function show(main, compared) {
  greyDigit($("preprocessed"), main.input.image);
  $("input-note").textContent = main.input.kind === "digit"
    ? `Test digit #${main.input.index}, labelled ${main.input.label}.` : "Your drawing.";
  bars($("main-prediction"), main);
  layers($("layers"), main, true);
  $("compare-prediction").hidden = $("compare-layers").hidden = !compared;
  $("compare-title").hidden = !compared;
  if (compared) {
    bars($("compare-prediction"), compared);
    $("compare-title").textContent = `Beside it: ${compared.model.label}`;
    layers($("compare-layers"), compared, false);
  }
  neighbourChoices(main);
  neighbours(main);
}

function bars(panel, answer) {
  panel.querySelector(".model-label").textContent = `(${answer.model.label})`;
  const holder = panel.querySelector(".bars");
  if (holder.children.length !== answer.probabilities.length) {
    holder.replaceChildren(...answer.probabilities.map((_, digit) => {
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.innerHTML = `<span class="value"></span><div class="fill"></div><span class="digit-label">${digit}</span>`;
      return bar;
    }));
  }
  answer.probabilities.forEach((p, digit) => {
    const bar = holder.children[digit];
    bar.classList.toggle("top", digit === answer.prediction);
    bar.querySelector(".fill").style.height = `${(100 * p).toFixed(1)}px`;
    bar.querySelector(".value").textContent = p >= 0.005 ? (100 * p).toFixed(0) : "";
    bar.title = `${digit}: ${(100 * p).toFixed(2)}%`;
  });
}

// ----------------------------------------------------------------------------- layers

// A vector signal is laid out as a near-square grid (225 -> 15x15, 144 -> 12x12); the logits as one row.
function gridOf(length, isLogits) {
  if (isLogits) return [1, length];
  const side = Math.ceil(Math.sqrt(length));
  return [Math.ceil(length / side), side];
}

function layers(holder, answer, clickable) {
  const key = `${answer.model.label}|${answer.layers.map((l) => l.name + l.label).join(",")}`;
  if (holder.dataset.key !== key) {
    holder.dataset.key = key;
    holder.replaceChildren(...answer.layers.map((layer, i) => layerFigure(layer, i === answer.layers.length - 1, clickable)));
  }
  answer.layers.forEach((layer, i) => {
    const {values} = floats(layer.signal);
    const figure = holder.children[i];
    const isLogits = i === answer.layers.length - 1;
    const canvases = figure.querySelectorAll("canvas");
    if (layer.shape.length === 3) {
      const [channels, height, width] = layer.shape;
      const colour = heat(maxAbs(values));
      for (let c = 0; c < channels; c++) {
        paint(canvases[c], width, height, values, c * height * width, colour);
        markUnit(canvases[c], layer.name, (u) => u[0] === c, (u) => [u[1], u[2], u[1] + 1, u[2] + 1]);
      }
    } else {
      const [rows, cols] = gridOf(values.length, isLogits);
      const padded = new Float32Array(rows * cols).fill(NaN);
      padded.set(values);
      const scale = maxAbs(values);
      paint(canvases[0], cols, rows, padded, 0, (v) => Number.isNaN(v) ? [40, 40, 40] : (isLogits ? signed(scale)(v) : heat(scale)(v)));
      markUnit(canvases[0], layer.name, () => true, (u) => [Math.floor(u[0] / cols), u[0] % cols,
                                                            Math.floor(u[0] / cols) + 1, u[0] % cols + 1]);
    }
  });
}

function markUnit(canvas, layerName, here, rect) {
  if (!canvas.dataset.clickable || !state.unit || state.unit.layer !== layerName || !here(state.unit.unit)) return;
  box(canvas, rect(state.unit.unit), "#22d3ee");
}

function layerFigure(layer, isLogits, clickable) {
  const figure = document.createElement("div");
  figure.className = "layer";
  figure.dataset.layer = layer.name;
  const title = document.createElement("div");
  title.className = "title";
  title.textContent = layer.name;
  const maps = document.createElement("div");
  maps.className = "maps";
  const canvases = [];
  if (layer.shape.length === 3) {
    const [channels, height] = layer.shape;
    maps.style.gridTemplateColumns = `repeat(${Math.min(channels, channels > 9 ? 8 : 9)}, ${MAP_PX}px)`;
    for (let c = 0; c < channels; c++) {
      const canvas = document.createElement("canvas");
      canvas.style.width = canvas.style.height = `${MAP_PX}px`;
      canvas.title = `${layer.name} channel ${c}`;
      if (clickable) canvas.addEventListener("click", (event) => {
        const y = Math.floor(event.offsetY / canvas.clientHeight * height);
        const x = Math.floor(event.offsetX / canvas.clientWidth * layer.shape[2]);
        chooseUnit(layer.name, [c, y, x]);
      });
      canvases.push(canvas);
    }
  } else {
    const [rows, cols] = gridOf(layer.shape[0], isLogits);
    const cell = isLogits ? 24 : Math.max(6, Math.floor(120 / cols));
    const canvas = document.createElement("canvas");
    canvas.style.width = `${cols * cell}px`;
    canvas.style.height = `${rows * cell}px`;
    canvas.title = isLogits ? "logits of 0 to 9 (red positive, blue negative)" : `${layer.name}: ${layer.shape[0]} units`;
    if (clickable) canvas.addEventListener("click", (event) => {
      const index = Math.floor(event.offsetY / cell) * cols + Math.floor(event.offsetX / cell);
      if (index < layer.shape[0]) chooseUnit(layer.name, [index]);
    });
    canvases.push(canvas);
  }
  for (const canvas of canvases) { if (clickable) canvas.dataset.clickable = "1"; maps.append(canvas); }
  const shape = document.createElement("div");
  shape.className = "shape";
  shape.textContent = layer.label;
  figure.append(title, maps, shape);
  return figure;
}

// ----------------------------------------------------------------------------- one unit

function chooseUnit(layer, unit) {
  state.unit = {layer, unit};
  if (state.lastThink) layers($("layers"), state.lastThink, true);
  showUnit().catch((error) => say(error.message));
}

async function showUnit() {
  const input = currentInput();
  if (!input || !state.unit) return;
  const answer = await api("/api/unit", {model: $("model").value, layer: state.unit.layer, unit: state.unit.unit, k: 9, ...input});
  window.explorer.last.unit = answer;
  $("unit").hidden = false;
  $("unit-name").textContent = `${answer.layer} ${JSON.stringify(answer.unit)}: activation ${answer.activation.toFixed(3)}`;
  for (const [rule, payload] of Object.entries(answer.maps)) {
    const {shape, values} = floats(payload);
    const canvas = $(`unit-${rule}`);
    paint(canvas, shape[1], shape[0], values, 0, signed(maxAbs(values)));
    if (answer.receptive_field) box(canvas, answer.receptive_field, "#facc15");
  }
  $("unit-top").replaceChildren(...answer.top.map((entry) => {
    const item = thumb(entry, `${entry.label}: ${entry.value.toFixed(2)}`);
    if (answer.receptive_field) box(item.querySelector("canvas"), answer.receptive_field, "#facc15");
    return item;
  }));
}

// ----------------------------------------------------------------------------- neighbours

function neighbourChoices(answer) {
  const select = $("neighbour-layer");
  const wanted = answer.neighbour_layers.filter((name) => name !== "pixels");
  if ([...select.options].map((o) => o.value).join() !== wanted.join()) {
    select.replaceChildren(...wanted.map((name) => new Option(name, name)));
  }
  if (answer.neighbours) select.value = answer.neighbours.layer;
}

function neighbours(answer) {
  if (!answer.neighbours) return;
  const predicted = answer.prediction;
  for (const [space, holder] of [["pixels", $("neighbours-pixels")], ["features", $("neighbours-features")]]) {
    holder.replaceChildren(...answer.neighbours[space].map((entry) => thumb(entry, `${entry.label} · ${entry.distance.toFixed(1)}`, predicted)));
  }
}

// ----------------------------------------------------------------------------- start

function markChosen(index) {
  for (const item of $("strip").children) item.classList.toggle("chosen", Number(item.dataset.index) === index);
}

async function start() {
  redrawPad();
  let models, digits;
  try {
    [models, digits] = await Promise.all([api("/api/models"), api("/api/digits?per_class=2")]);
  } catch (error) {
    say(error.message);
    return;
  }
  const names = models.runs.map((run) => run.name);
  for (const [select, chosen] of [[$("model"), models.default], [$("compare"), models.comparison]]) {
    const options = names.includes(chosen) ? names : [chosen, ...names];
    select.replaceChildren(...options.map((name) => {
      const run = models.runs.find((r) => r.name === name);
      const accuracy = run && run.test_accuracy != null ? ` (${(100 * run.test_accuracy).toFixed(1)}%)` : "";
      return new Option(name + accuracy, name);
    }));
    select.value = chosen;
  }
  $("digits-note").textContent = `From ${models.digits}; neighbours and top activations among the first ${models.searched_digits}.`;
  $("strip").replaceChildren(...digits.digits.map((entry) => {
    const item = thumb(entry, String(entry.label));
    item.dataset.index = entry.index;
    item.addEventListener("click", () => {
      state.digit = entry;
      state.strokes = [];
      markChosen(entry.index);
      redrawPad();
      schedule();
    });
    return item;
  }));
  if (models.runs.length === 0) {
    say(`No trained model in ${models.tracking_uri} yet: train them with make run ` +
        "(or start the explorer with --model models:/<id>).");
  } else {
    say("Draw a digit on the pad, or pick a test digit.", "info");
  }
  for (const id of ["model", "compare", "compare-on", "neighbour-layer"]) $(id).addEventListener("change", () => {
    if (id === "model") {  // another network: its own layers and units
      state.unit = null;
      $("unit").hidden = true;
      $("neighbour-layer").replaceChildren();
    }
    schedule();
  });
}

start();
