// vae-explorer: draw to encode. A plain 2D canvas (a gr.Sketchpad costs 150-200 ms per pointer move on a small
// machine; this, ~17 ms) whose drawing is sent as a PNG data URL to the server's `draw_encode` (app.py's
// draw_section, a server function: one POST, no queue) while a stroke is drawn and when it ends. The answer
// places the drawing on both latent maps: a mark, and for a VAE the 2-σ ellipse of q(z|x), drawn here as an SVG
// overlay over each plotly map from the map coordinates the server computed (re-sending a 10,000-point figure
// would cost ~400 ms). The overlay is redrawn after every plot of a map (zoom, pan) and on every new figure
// (Gradio replaces the plot's div on each update: a MutationObserver finds the new one). The same overlay shows
// the last image uploaded in Reconstruct, Denoise or Interpolate ("your upload"), which the server places.
(() => {
  if (window.vaeSketch) return;
  const SIDES = ["left", "right"];
  const NS = "http://www.w3.org/2000/svg";
  const MARKS = {  // what each kind of mark looks like on the maps
    drawing: {label: "your drawing", colour: "#111111", dash: "", symbol: "star", labelDy: -10},
    upload: {label: "your upload", colour: "#7b3294", dash: "5 3", symbol: "diamond", labelDy: 20},  // below: both fit
  };
  const marks = {left: {}, right: {}};  // side -> kind -> {x, y, ellipse, model}
  const pads = [];
  // Read by the browser tests and benchmarks/draw_encode.py: answers shown, each request's round trip, and
  // each stroke's end -> both maps updated with a drawing that includes the whole stroke.
  const state = {encodes: 0, lastMs: null, msHistory: [], strokeMs: []};

  // ---- the overlay on the maps ------------------------------------------------------------------------

  function plotOf(side) {
    const gd = document.querySelector(`#map_${side} .js-plotly-plot`);
    return gd && gd._fullLayout && gd._fullLayout.xaxis && gd._fullLayout.yaxis ? gd : null;
  }

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function symbolPath(kind, x, y) {
    if (kind === "diamond") return `M${x},${y - 8}L${x + 8},${y}L${x},${y + 8}L${x - 8},${y}Z`;
    let d = "";  // a five-pointed star
    for (let i = 0; i < 10; i++) {
      const r = i % 2 ? 4.2 : 10, a = -Math.PI / 2 + i * Math.PI / 5;
      d += `${i ? "L" : "M"}${(x + r * Math.cos(a)).toFixed(1)},${(y + r * Math.sin(a)).toFixed(1)}`;
    }
    return d + "Z";
  }

  function redraw(side) {
    const gd = plotOf(side);
    if (!gd) return;
    const fl = gd._fullLayout, xa = fl.xaxis, ya = fl.yaxis;
    const host = gd.querySelector(".svg-container") || gd;
    let svg = host.querySelector(":scope > svg.vae-marks");
    if (!svg) {
      svg = el("svg", {class: "vae-marks"}, host);
      svg.style.cssText = "position:absolute;left:0;top:0;pointer-events:none;overflow:visible;z-index:5";
    }
    svg.setAttribute("width", fl.width);
    svg.setAttribute("height", fl.height);
    svg.replaceChildren();
    const px = (x) => xa._offset + xa.l2p(x), py = (y) => ya._offset + ya.l2p(y);
    const clipId = `vae-marks-clip-${side}`;
    el("rect", {x: xa._offset, y: ya._offset, width: xa._length, height: ya._length},
       el("clipPath", {id: clipId}, el("defs", {}, svg)));
    const area = el("g", {"clip-path": `url(#${clipId})`}, svg);
    // The map's title ends with its projection (RAW, PCA, UMAP): a mark placed for another one (a UMAP map
    // that replaced the PCA shown while it was computed) is not drawn, and is asked for again.
    const title = (fl.title && fl.title.text) || "";
    const shown = title.slice(title.lastIndexOf(", ") + 2);
    for (const [kind, m] of Object.entries(marks[side])) {
      if (!m || !Number.isFinite(m.x) || !Number.isFinite(m.y)) continue;
      if (m.method && shown && m.method.toUpperCase() !== shown) { placeAgain(kind, `${side}:${shown}`); continue; }
      const look = MARKS[kind], x = px(m.x), y = py(m.y);
      const g = el("g", {class: `vae-mark vae-mark-${kind}`, "data-x": m.x, "data-y": m.y,
                         "data-px": x.toFixed(2), "data-py": y.toFixed(2)}, area);
      if (m.ellipse) {
        const d = m.ellipse.x.map((ex, i) => `${i ? "L" : "M"}${px(ex).toFixed(1)},${py(m.ellipse.y[i]).toFixed(1)}`);
        el("path", {class: "vae-ellipse", d: d.join("") + "Z", fill: look.colour, "fill-opacity": 0.08,
                    stroke: look.colour, "stroke-width": 2, "stroke-dasharray": look.dash}, g);
      }
      el("path", {class: "vae-point", d: symbolPath(look.symbol, x, y), fill: look.colour, stroke: "white",
                  "stroke-width": 1.5}, g);
      const label = el("text", {x: x + 12, y: y + look.labelDy, "font-size": 13, "font-weight": 600, fill: look.colour,
                                stroke: "white", "stroke-width": 3, "paint-order": "stroke"}, g);
      label.textContent = look.label;
    }
  }

  function redrawAll() { SIDES.forEach(redraw); }

  const asked = new Set();  // kind and map shown, asked once each until the next answer
  function placeAgain(kind, why) {
    if (asked.has(`${kind}@${why}`)) return;
    asked.add(`${kind}@${why}`);
    setTimeout(() => {
      if (kind === "drawing") pads.forEach((pad) => { pad.generation++; pad.sent = pad.shown = -1; send(pad, true); });
      else { const b = document.querySelector("#draw_refresh"); if (b) b.click(); }  // the server has the file
    }, 0);
  }

  function hook() {
    for (const side of SIDES) {
      const gd = plotOf(side);
      if (!gd || gd.__vaeSketch || typeof gd.on !== "function") continue;
      gd.__vaeSketch = true;
      gd.on("plotly_afterplot", () => redraw(side));
      gd.on("plotly_relayouting", () => redraw(side));
      redraw(side);
    }
  }
  new MutationObserver(hook).observe(document.documentElement, {childList: true, subtree: true});

  function setMark(side, kind, result) {
    marks[side][kind] = result && !result.error ? {x: result.x, y: result.y, ellipse: result.ellipse,
                                                   model: result.model, method: result.method} : null;
    asked.forEach((key) => { if (key.startsWith(`${kind}@${side}:`)) asked.delete(key); });
    redraw(side);
  }

  // ---- the sketchpad ------------------------------------------------------------------------------------

  function attach(element, props, server, watch) {
    const canvas = element.querySelector("canvas.vae-pad");
    const pad = {element, props, server, canvas, ctx: canvas.getContext("2d"), spec: null, ink: 0, sent: -1,
                 out: 0, generation: 0, again: false, drawing: false, lastSend: 0, pictureId: null, pen: 24,
                 shown: -1};
    pads.push(pad);
    clear(pad);
    const at = (e) => [e.offsetX * canvas.width / canvas.clientWidth, e.offsetY * canvas.height / canvas.clientHeight];
    canvas.addEventListener("pointerdown", (e) => {
      if (!pad.enabled) return;
      pad.drawing = true;
      canvas.setPointerCapture(e.pointerId);
      const [x, y] = at(e);
      pad.ctx.beginPath();
      pad.ctx.moveTo(x, y);
      pad.ctx.lineTo(x + 0.01, y);
      pad.ctx.stroke();
      pad.ink++;
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!pad.drawing) return;
      const [x, y] = at(e);
      pad.ctx.lineTo(x, y);
      pad.ctx.stroke();
      pad.ink++;
      // While drawing: whenever no request is out, at most every 100 ms; the stroke's end always sends.
      if (pad.out === 0 && performance.now() - pad.lastSend > 100) send(pad);
    });
    const end = () => {
      if (!pad.drawing) return;
      pad.drawing = false;
      if (pad.shown >= pad.ink) {  // the answer to a send while drawing already covered the whole stroke
        state.strokeMs.push(0);
        return;
      }
      pad.strokeEnd = {at: performance.now(), ink: pad.ink};  // timed until an answer covering it is shown
      send(pad, true);  // (if a request is out that already covers the stroke, its answer is the one timed)
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    element.querySelector(".vae-clear").addEventListener("click", () => clear(pad));
    element.querySelector(".vae-resample").addEventListener("click", () => resample(pad));
    watch("value", () => setSpec(pad, props.value));
    setSpec(pad, props.value);
  }

  function clear(pad) {
    const {ctx, canvas} = pad;
    ctx.fillStyle = "white";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.strokeStyle = "black";
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.lineWidth = pad.pen;
    pad.ink = 0;
    pad.sent = pad.shown = -1;
    pad.generation++;
    SIDES.forEach((side) => setMark(side, "drawing", null));
    pad.element.querySelectorAll(".vae-result img").forEach((img) => { img.removeAttribute("src"); });
    pad.element.querySelectorAll(".vae-result .vae-where, .vae-result .vae-samples-caption")
      .forEach((p) => { p.textContent = ""; });
    status(pad, pad.spec && pad.enabled ? "Draw with the mouse (or a finger) in the white box." : pad.why || "");
  }

  function status(pad, text) { pad.element.querySelector(".vae-status").textContent = text; }

  function setSpec(pad, text) {
    let spec;
    try { spec = JSON.parse(text || "null"); } catch (e) { return; }
    if (!spec) return;
    const before = pad.spec;
    pad.spec = spec;
    const why = spec.why || null;
    pad.enabled = !why;
    pad.why = why;
    pad.element.classList.toggle("vae-disabled", !!why);
    pad.element.querySelector(".vae-resample").disabled = !!why;
    // A pen about as thick, once resized to the models' input, as the training images' strokes.
    pad.pen = Math.round(pad.canvas.width * Math.max(0.085, 1.3 / (spec.input_height || 28)));
    pad.ctx.lineWidth = pad.pen;
    SIDES.forEach((side, i) => {
      const box = pad.element.querySelector(`.vae-result[data-side=${side}]`);
      box.querySelector(".vae-name").textContent = `${i ? "Right" : "Left"} model: ${spec.models[i] || "none"}`;
      setMark(side, "upload", spec.upload ? spec.upload[i] : null);
    });
    pad.element.querySelector(".vae-upload-note").textContent = spec.upload_note || "";
    if (why) {
      status(pad, why);
      SIDES.forEach((side) => setMark(side, "drawing", null));
      return;
    }
    if (spec.picture && spec.picture_id !== pad.pictureId) {  // an uploaded file, read by the server
      pad.pictureId = spec.picture_id;
      const img = new Image();
      img.onload = () => {
        pad.ctx.drawImage(img, 0, 0, pad.canvas.width, pad.canvas.height);
        pad.ink++;
        pad.generation++;
        if (spec.result) { pad.sent = pad.shown = pad.ink; show(pad, spec.result, null, "from the uploaded file"); } else send(pad);
      };
      img.src = spec.picture;
      return;
    }
    const moved = !before || JSON.stringify(before.models) !== JSON.stringify(spec.models)
      || before.projection !== spec.projection;
    if (moved && pad.ink > 0) {  // the same drawing, read by the new models
      pad.generation++;
      pad.sent = pad.shown = -1;
      send(pad, true);
    } else if (!pad.ink) {
      status(pad, "Draw with the mouse (or a finger) in the white box.");
    }
  }

  async function send(pad, now = false) {
    if (!pad.spec || !pad.enabled || pad.ink === 0 || pad.ink === pad.sent) return;
    // While drawing, one request at a time: the next waits for the answer and takes the drawing as it is then.
    // A stroke's end (now) goes at once, beside a request still out, so it never waits for an answer it will
    // replace; an answer older than the one shown, or from before a clear or a change of models, is dropped.
    if (pad.out > 0 && !now) { pad.again = true; return; }
    pad.out++;
    pad.again = false;
    pad.sent = pad.ink;
    pad.lastSend = performance.now();
    const t0 = performance.now(), ink = pad.ink, generation = pad.generation;
    const {models, projection} = pad.spec;
    try {
      const answer = await pad.server.draw_encode({left: models[0], right: models[1], projection,
                                                   drawing: pad.canvas.toDataURL("image/png")});
      if (generation === pad.generation && ink > pad.shown) {
        show(pad, answer, performance.now() - t0);
        pad.shown = ink;
        if (pad.strokeEnd && ink >= pad.strokeEnd.ink) {
          state.strokeMs.push(performance.now() - pad.strokeEnd.at);
          pad.strokeEnd = null;
        }
      }
    } catch (e) {
      if (generation === pad.generation) status(pad, `The server could not encode the drawing: ${e.message || e}`);
    } finally {
      pad.out--;
    }
    if (pad.again && pad.out === 0) send(pad);
  }

  function show(pad, answer, ms, how) {
    if (answer.error) { status(pad, answer.error); return; }
    SIDES.forEach((side, i) => {
      const r = answer.maps[i], box = pad.element.querySelector(`.vae-result[data-side=${side}]`);
      setMark(side, "drawing", r);
      if (!r) return;
      if (r.error) {
        box.querySelector(".vae-where").textContent = r.error;
        box.querySelectorAll("img").forEach((img) => img.removeAttribute("src"));
        return;
      }
      box.querySelector("img.vae-input").src = r.input;
      box.querySelector("img.vae-output").src = r.reconstruction;
      box.querySelector(".vae-where").textContent = r.where;
    });
    state.encodes++;
    if (ms !== null) {
      state.lastMs = ms;
      state.msHistory.push(ms);
    }
    status(pad, ms === null ? `Encoded by both models ${how}; draw over it, or clear.`
      : `Encoded by both models and placed on both maps in ${ms.toFixed(0)} ms (round trip to the server).`);
  }

  async function resample(pad) {
    if (!pad.spec || !pad.enabled) return;
    if (!pad.ink) { status(pad, "Draw something first: resampling decodes samples of q(z|x) for your drawing."); return; }
    const {models} = pad.spec;
    try {
      const answer = await pad.server.draw_resample({left: models[0], right: models[1],
                                                     drawing: pad.canvas.toDataURL("image/png"),
                                                     seed: Math.floor(Math.random() * 2 ** 31)});
      if (answer.error) { status(pad, answer.error); return; }
      SIDES.forEach((side, i) => {
        const r = answer.maps[i], box = pad.element.querySelector(`.vae-result[data-side=${side}]`);
        const img = box.querySelector("img.vae-samples");
        if (r && r.picture) img.src = r.picture; else img.removeAttribute("src");
        box.querySelector(".vae-samples-caption").textContent = r ? (r.error || r.caption) : "";
      });
      state.resamples = (state.resamples || 0) + 1;
    } catch (e) {
      status(pad, `The server could not resample: ${e.message || e}`);
    }
  }

  window.vaeSketch = {attach, marks, state, redraw: redrawAll};
})();
