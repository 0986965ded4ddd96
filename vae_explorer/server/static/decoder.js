// vae-explorer: decoders that run in the page, so a drag redraws every frame without asking the server.
//
// The server writes each model's decoder once as a JSON index (layer ops, where each tensor lies) and a
// float32 little-endian blob (vae_explorer/server/page_decoders.py; the ops are described in
// vae_explorer/models/page.py, whose numpy `run` this mirrors). A view is a canvas in a gr.HTML whose value
// is a JSON spec sent by the server when a model or an item is chosen: the decoder's URL (or why the server
// decodes), the code the sliders move (offset + values · directions) or the two endpoint codes of an
// interpolation, the item shape and the upscaling the server's images use. Pixels are made as the server
// makes them (vae_explorer/data/images.py to_pil: clamp to [0, 1], ×255 + 0.5 in float32, truncated, upscaled
// by repeating pixels), so the canvas matches the server's PNG within one grey level.
(() => {
  if (window.vaePage) return;
  const f32 = Math.fround;
  const nets = new Map();  // index URL -> Promise of a loaded decoder (one fetch per model and version)

  async function load(url) {
    if (!nets.has(url)) {
      nets.set(url, (async () => {
        const index = await (await fetchOk(url)).json();
        const base = url.slice(0, url.lastIndexOf("/") + 1);
        const all = new Float32Array(await (await fetchOk(base + index.blob)).arrayBuffer());
        if (all.length !== index.floats) throw new Error(`expected ${index.floats} weights, got ${all.length}`);
        const tensors = {};
        for (const [name, t] of Object.entries(index.tensors)) {
          const size = t.shape.reduce((a, b) => a * b, 1);
          tensors[name] = {shape: t.shape, data: all.subarray(t.offset, t.offset + size)};
        }
        return {index, tensors, bytes: all.byteLength};
      })());
      nets.get(url).catch(() => nets.delete(url));  // a failed fetch may be retried by the next spec
    }
    return nets.get(url);
  }

  async function fetchOk(url) {
    const r = await fetch(url);
    if (!r.ok) throw new Error(`${url.split("/").pop()}: HTTP ${r.status}`);
    return r;
  }

  // ---- the ops (shapes as in torch, one item, channels first) ------------------------------------------

  function linear(W, b, x) {  // W (out, in) row-major
    const [out, inp] = W.shape, w = W.data, y = new Float32Array(out);
    for (let o = 0; o < out; o++) {
      let s = b.data[o];
      const row = o * inp;
      for (let i = 0; i < inp; i++) s += w[row + i] * x[i];
      y[o] = s;
    }
    return y;
  }

  function conv2d(W, b, x, [C, H, Wd], s, p) {  // W (Cout, Cin, k, k)
    const [Cout, Cin, k] = W.shape, w = W.data;
    const Ho = Math.floor((H + 2 * p - k) / s) + 1, Wo = Math.floor((Wd + 2 * p - k) / s) + 1;
    const y = new Float32Array(Cout * Ho * Wo);
    for (let co = 0; co < Cout; co++) for (let oh = 0; oh < Ho; oh++) for (let ow = 0; ow < Wo; ow++) {
      let acc = b.data[co];
      for (let ci = 0; ci < Cin; ci++) for (let kh = 0; kh < k; kh++) {
        const ih = oh * s - p + kh;
        if (ih < 0 || ih >= H) continue;
        for (let kw = 0; kw < k; kw++) {
          const iw = ow * s - p + kw;
          if (iw >= 0 && iw < Wd) acc += x[(ci * H + ih) * Wd + iw] * w[((co * Cin + ci) * k + kh) * k + kw];
        }
      }
      y[(co * Ho + oh) * Wo + ow] = acc;
    }
    return {y, shape: [Cout, Ho, Wo]};
  }

  function convTranspose2d(W, b, x, [Cin, H, Wd], s, p, op, scratch) {  // W (Cin, Cout, k, k)
    const [, Cout, k] = W.shape, w = W.data, K = Cout * k * k;
    const Ho = (H - 1) * s - 2 * p + k + op[0], Wo = (Wd - 1) * s - 2 * p + k + op[1];
    const y = new Float32Array(Cout * Ho * Wo);
    for (let co = 0; co < Cout; co++) y.fill(b.data[co], co * Ho * Wo, (co + 1) * Ho * Wo);
    // Per input pixel, its kernel for every output channel at once: tmp (Cout·k·k) = Σ_ci x[ci] · W[ci], a
    // contiguous row of W per input channel (fast in a JIT), then scattered into the output.
    const tmp = scratch.length >= K ? scratch : new Float32Array(K);
    for (let ih = 0; ih < H; ih++) for (let iw = 0; iw < Wd; iw++) {
      tmp.fill(0, 0, K);
      let any = false;
      for (let ci = 0; ci < Cin; ci++) {
        const v = x[(ci * H + ih) * Wd + iw];
        if (v === 0) continue;  // after a ReLU most inputs are zero: they add nothing
        any = true;
        const row = ci * K;
        for (let q = 0; q < K; q++) tmp[q] += v * w[row + q];
      }
      if (!any) continue;
      for (let kh = 0; kh < k; kh++) {
        const oh = ih * s - p + kh;
        if (oh < 0 || oh >= Ho) continue;
        for (let kw = 0; kw < k; kw++) {
          const ow = iw * s - p + kw;
          if (ow < 0 || ow >= Wo) continue;
          for (let co = 0; co < Cout; co++) y[(co * Ho + oh) * Wo + ow] += tmp[(co * k + kh) * k + kw];
        }
      }
    }
    return {y, shape: [Cout, Ho, Wo]};
  }

  function forward(net, z) {  // z: (latent_dim,) numbers -> Float32Array of output_shape
    let x = Float32Array.from(z), shape = [x.length];
    const T = net.tensors;
    for (const op of net.index.ops) {
      switch (op.op) {
        case "linear": x = linear(T[op.w], T[op.b], x); shape = [x.length]; break;
        case "relu": for (let i = 0; i < x.length; i++) if (x[i] < 0) x[i] = 0; break;
        case "leaky_relu": for (let i = 0; i < x.length; i++) if (x[i] < 0) x[i] *= op.slope; break;
        case "sigmoid": for (let i = 0; i < x.length; i++) x[i] = 1 / (1 + Math.exp(-x[i])); break;
        case "tanh": for (let i = 0; i < x.length; i++) x[i] = Math.tanh(x[i]); break;
        case "reshape": shape = op.shape.length === 1 ? [x.length] : op.shape.slice(); break;
        case "affine": {
          const sc = T[op.scale].data, sh = T[op.shift].data, per = x.length / sc.length;
          for (let i = 0; i < x.length; i++) { const c = Math.floor(i / per); x[i] = x[i] * sc[c] + sh[c]; }
          break;
        }
        case "conv2d": ({y: x, shape} = conv2d(T[op.w], T[op.b], x, shape, op.stride, op.padding)); break;
        case "conv_transpose2d":
          ({y: x, shape} = convTranspose2d(T[op.w], T[op.b], x, shape, op.stride, op.padding, op.output_padding,
                                           net.scratch || (net.scratch = new Float32Array(4096))));
          break;
        case "upsample": {
          const [C, H, W] = shape, f = op.factor, Ho = H * f, Wo = W * f, y = new Float32Array(C * Ho * Wo);
          for (let c = 0; c < C; c++) for (let i = 0; i < Ho; i++) for (let j = 0; j < Wo; j++)
            y[(c * Ho + i) * Wo + j] = x[(c * H + Math.floor(i / f)) * W + Math.floor(j / f)];
          x = y; shape = [C, Ho, Wo]; break;
        }
        default: throw new Error(`unknown op ${op.op}`);
      }
    }
    return x;
  }

  // ---- drawing ------------------------------------------------------------------------------------------

  function draw(view, out) {
    const [C, H, W] = view.spec.shape, s = view.spec.scale, cv = view.canvas;
    if (cv.width !== W * s || cv.height !== H * s) { cv.width = W * s; cv.height = H * s; view.image = null; }
    if (!view.image) view.image = view.ctx.createImageData(W * s, H * s);
    const px = view.image.data, small = new Uint8ClampedArray(H * W * 3);
    for (let c = 0; c < 3; c++) {
      const src = (C === 1 ? 0 : c) * H * W;
      for (let i = 0; i < H * W; i++) {
        const v = Math.min(Math.max(out[src + i], 0), 1);  // as torch's clamp(0, 1), then float32 arithmetic
        small[i * 3 + c] = Math.floor(f32(f32(f32(v) * 255) + 0.5));
      }
    }
    const Wb = W * s;
    for (let y = 0; y < H * s; y++) {
      const row = Math.floor(y / s) * W;
      for (let x = 0; x < Wb; x++) {
        const from = (row + Math.floor(x / s)) * 3, to = (y * Wb + x) * 4;
        px[to] = small[from]; px[to + 1] = small[from + 1]; px[to + 2] = small[from + 2]; px[to + 3] = 255;
      }
    }
    view.ctx.putImageData(view.image, 0, 0);
  }

  // ---- views --------------------------------------------------------------------------------------------

  const views = {};
  const frames = [];  // {view, start, end}: performance.now() around each decode + draw (benchmarks, tests)

  function setMode(view, mode, text) {
    view.mode = mode;
    document.documentElement.setAttribute(`data-vae-${view.key}`, mode);
    view.how.textContent = text;
  }

  function render(view, z, source = "spec") {
    const start = performance.now();
    draw(view, forward(view.net, z));
    const end = performance.now();
    const frame = {view: view.key, source, start, end, shown: null};
    requestAnimationFrame(() => { frame.shown = performance.now(); });  // the next frame the screen shows
    frames.push(frame);
    if (frames.length > 5000) frames.splice(0, frames.length - 5000);
    view.drawn += 1;
    view.ms.textContent = ` Last frame: ${(end - start).toFixed(1)} ms.`;
  }

  function codeOf(view, input) {  // slider values or t -> the code to decode
    const sp = view.spec;
    if (sp.directions) {
      const z = sp.offset.slice();
      sp.directions.forEach((dir, k) => { const v = Number(input[k]); for (let d = 0; d < z.length; d++) z[d] += v * dir[d]; });
      return z;
    }
    return interpolate(sp.za, sp.zb, Number(input), sp.mode);
  }

  // vae_explorer/latent.py interpolate, in float64 as there.
  function interpolate(z0, z1, t, mode) {
    const lerp = () => z0.map((a, i) => (1 - t) * a + t * z1[i]);
    if (mode !== "spherical") return lerp();
    const n0 = Math.hypot(...z0), n1 = Math.hypot(...z1);
    if (n0 < 1e-8 || n1 < 1e-8) return lerp();
    const u0 = z0.map(v => v / n0), u1 = z1.map(v => v / n1);
    const omega = Math.acos(Math.min(Math.max(u0.reduce((s, v, i) => s + v * u1[i], 0), -1), 1));
    if (omega < 1e-4) return lerp();
    const a = Math.sin((1 - t) * omega) / Math.sin(omega), b = Math.sin(t * omega) / Math.sin(omega);
    const norm = (1 - t) * n0 + t * n1;
    return u0.map((v, i) => (a * v + b * u1[i]) * norm);
  }

  function askServer(view) {
    if (!view.spec.fallback) return;  // a view whose own script asks the server (the map's marker)
    const button = document.querySelector(`#${view.spec.fallback} button, button#${view.spec.fallback}`);
    if (button) button.click();
  }

  async function setSpec(view, text) {
    if (!text) return;
    const spec = typeof text === "string" ? JSON.parse(text) : text, version = ++view.version;
    view.spec = spec;
    view.latest = spec.directions ? spec.values : spec.t;  // null: nothing to draw until the first input
    view.drawn = 0;  // frames of this spec
    if (!spec.decoder) {
      view.net = null;
      setMode(view, "server", `${spec.model || "This model"}: decoded on the server (${spec.reason}).`);
      view.ms.textContent = "";
      return;
    }
    const caption = `${spec.model}: decoded in your browser, no request to the server per frame (${spec.summary}).` +
      (spec.hint ? ` ${spec.hint}` : "");
    if (view.net && view.netUrl === spec.decoder) {  // the same decoder, another item: draw at once
      setMode(view, "page", caption);
      view.drawnInput = null;
      if (view.latest != null) render(view, codeOf(view, view.latest));
      return;
    }
    view.net = null;  // never the previous model's decoder with this spec's codes
    setMode(view, "loading", `${spec.model}: loading its decoder into the page…`);
    try {
      const net = await load(spec.decoder);
      if (version !== view.version) return;  // a newer spec arrived meanwhile
      view.net = net;
      view.netUrl = spec.decoder;
      view.drawnInput = null;
      setMode(view, "page", caption);
      if (view.latest != null) render(view, codeOf(view, view.latest));
    } catch (e) {
      if (version !== view.version) return;
      setMode(view, "server", `${spec.model}: decoded on the server (its decoder could not be loaded into the page: ${e.message}).`);
      askServer(view);
    }
  }

  function attach(key, element, props, watch) {
    const view = views[key] = {key, element, canvas: element.querySelector("canvas"),
      how: element.querySelector(".vae-how"), ms: element.querySelector(".vae-ms"), version: 0, drawn: 0,
      mode: null, spec: null, net: null, netUrl: null, image: null};
    view.ctx = view.canvas.getContext("2d");
    setMode(view, "server", "");
    watch("value", () => setSpec(view, props.value));
    setSpec(view, props.value);
  }

  // The drag path, twice over, neither making a request:
  // - the range inputs' own `input` events (one capturing listener for the document, so it survives Gradio
  //   re-rendering the sliders) decode at once, within the event's dispatch, before Gradio's own handlers;
  // - Gradio's js-only slider events call `input` after Gradio has taken the value: it draws what the first
  //   path did not see (a number typed in the slider's box; with askIfServer false, values the server set,
  //   as when the tab is opened again), and where the page cannot decode the model it clicks the view's
  //   hidden button, whose listener is the server's decode (with the values Gradio holds).
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

  function update(view, value, source) {
    view.latest = value;
    if (view.mode !== "page" || same(value, view.drawnInput)) return;  // "loading" draws view.latest when ready
    view.drawnInput = value;
    render(view, codeOf(view, value), source);
  }

  document.addEventListener("input", (e) => {
    const range = e.target;
    if (!(range instanceof HTMLInputElement) || range.type !== "range") return;
    for (const view of Object.values(views)) {
      const ids = view.spec && view.spec.inputs;
      if (!ids || !ids.some(id => range.closest(`#${id}`))) continue;
      if (view.spec.directions) {
        const values = ids.map(id => { const el = document.querySelector(`#${id} input[type=range]`);
                                       return el ? Number(el.value) : 0; });
        update(view, values.slice(0, view.spec.directions.length), "input");
      } else {
        update(view, Number(range.value), "input");
      }
    }
  }, true);

  function input(keys, value, askIfServer = true) {
    let server = null;
    for (const key of keys) {
      const view = views[key];
      if (!view || !view.spec) continue;
      const v = Array.isArray(value) && view.spec.directions ? value.slice(0, view.spec.directions.length).map(Number)
        : Array.isArray(value) ? value : Number(value);
      if (view.mode === "server") { view.latest = v; server = view; } else update(view, v, "gradio");
    }
    if (server && askIfServer) askServer(server);
  }

  // A spec from another script (map_touch.js reads the map's from its figure): null sends the view to the server.
  function show(key, spec) {
    const view = views[key];
    if (!view) return;
    if (spec) { setSpec(view, spec); return; }
    view.version += 1;  // a decoder still loading for the previous spec is not used
    view.spec = null;
    view.net = null;
    setMode(view, "server", "");
    view.ms.textContent = "";
  }

  window.vaePage = {attach, input, show, load, forward, views, frames};
})();
