// The latent maps you can touch (app.py's Latent map tab), one attach() per map:
// - hover a point: its input image shows beside the cursor, cut from the map's sprite sheet (layout.meta.tiles:
//   tile i of the sheet is the point whose customdata is i), with no request per hover; the nearest point within
//   plotly's hover distance is found here, on every mousemove, without waiting for plotly's throttled hover;
// - click empty space: a marker is drawn there in the page (resending a 10,000-point figure to move one marker
//   would take ~400 ms) and the map's data coordinates go to the server, which decodes them (layout.meta.map
//   says which model and projection this map shows) and captions the code;
// - drag the marker: it follows the pointer. Where the page can run the model's decoder (layout.meta.map.page:
//   a raw or PCA plane, code = offset + (x, y) · directions) each move is decoded here, in decoder.js's view
//   "map-<side>", with no request; the server hears the final position only. Else (UMAP, tables) every move
//   sends its position, and the server's listener runs "always_last": it decodes the newest and skips the rest.
// Plotly reports clicks on points only (plotly_click); a press without movement on empty space comes as a DOM
// click on the .nsewdrag rectangle, and the axes' p2d turn its pixel into data coordinates. Gradio replaces
// the plot's div on every figure update, so a MutationObserver hooks each new one.
(() => {
  if (window.vaeMapTouch) return;
  const GRAB_PX = 12;          // a press this close to the marker drags it instead of zooming
  const TILE_PX = 84;          // the hover picture's size on screen, about
  const sides = {};

  const meta = (gd) => (gd._fullLayout && gd._fullLayout.meta) || (gd.layout && gd.layout.meta) || {};
  const mapKey = (gd) => { const m = meta(gd).map || {}; return `${m.model}|${m.projection}`; };

  function toData(gd, clientX, clientY) {
    const fl = gd._fullLayout, r = gd.getBoundingClientRect();
    return [fl.xaxis.p2d(clientX - r.left - fl.xaxis._offset), fl.yaxis.p2d(clientY - r.top - fl.yaxis._offset)];
  }

  function toPixel(gd, x, y) {  // relative to the plot's div
    const fl = gd._fullLayout;
    return [fl.xaxis._offset + fl.xaxis.d2p(x), fl.yaxis._offset + fl.yaxis.d2p(y)];
  }

  function inPlotArea(gd, px, py) {
    const fl = gd._fullLayout;
    return px >= fl.xaxis._offset && px <= fl.xaxis._offset + fl.xaxis._length &&
           py >= fl.yaxis._offset && py <= fl.yaxis._offset + fl.yaxis._length;
  }

  function place(s) {
    const gd = s.gd;
    if (!gd || !s.marker || !gd._fullLayout || !gd._fullLayout.xaxis) return;
    if (!s.at) { s.marker.style.display = "none"; return; }
    const [px, py] = toPixel(gd, s.at[0], s.at[1]);
    s.marker.style.left = `${px}px`;
    s.marker.style.top = `${py}px`;
    s.marker.style.display = inPlotArea(gd, px, py) ? "block" : "none";
    s.marker.dataset.x = String(s.at[0]);
    s.marker.dataset.y = String(s.at[1]);
  }

  function send(s) {
    const m = meta(s.gd).map || {};
    s.sent += 1;  // in the value: each position is a new value, and the listener reads the latest one
    s.props.value = JSON.stringify({model: m.model, projection: m.projection, x: s.at[0], y: s.at[1], seq: s.sent});
    s.trigger("mapclick");
  }

  // The page's own decode of the marker's position, when decoder.js runs this map's model (else false).
  function decodeHere(s) {
    const view = window.vaePage && window.vaePage.views[`map-${s.side}`];
    if (!view || view.mode !== "page" || !s.at) return false;
    window.vaePage.input([view.key], s.at, false);
    return true;
  }

  // The map's page spec to decoder.js (at every new figure: another model or projection, or the same redrawn).
  function showPageSpec(s, gd) {
    s.specShown = !!(window.vaePage && window.vaePage.views[`map-${s.side}`]);
    if (!s.specShown) return;  // the view mounts later: attach's observer delivers the spec then
    const page = (meta(gd).map || {}).page;
    if (!page || !page.decoder) { window.vaePage.show(`map-${s.side}`, null); return; }
    window.vaePage.show(`map-${s.side}`, {...page, decoder: `gradio_api/file=${page.decoder}`, values: s.at});
  }

  function hideTip(s) { if (s.tip) s.tip.style.display = "none"; }

  // The points in the plot's pixels, bucketed on a grid of HOVER_PX cells: the nearest point to the pointer
  // in a few dozen distance checks. Plotly's own hover is throttled to one per 50 ms and then builds its label;
  // the picture follows the pointer at once this way (rebuilt after every zoom, pan or new figure).
  const HOVER_PX = 20;  // plotly's hoverdistance
  function pointGrid(gd) {
    const fl = gd._fullLayout, xa = fl.xaxis, ya = fl.yaxis, cells = new Map();
    for (const tr of gd._fullData) {
      if (tr.visible !== true || tr.name === "selected" || !tr.x || !tr.customdata) continue;
      for (let k = 0; k < tr.x.length; k++) {
        const px = xa._offset + xa.l2p(tr.x[k]), py = ya._offset + ya.l2p(tr.y[k]);
        if (!Number.isFinite(px) || !Number.isFinite(py)) continue;
        const key = `${Math.floor(px / HOVER_PX)},${Math.floor(py / HOVER_PX)}`;
        let cell = cells.get(key);
        if (!cell) cells.set(key, cell = []);
        cell.push(px, py, Number(tr.customdata[k]));
      }
    }
    return cells;
  }

  function nearest(s, px, py) {
    if (!s.grid) s.grid = pointGrid(s.gd);
    const cx = Math.floor(px / HOVER_PX), cy = Math.floor(py / HOVER_PX);
    let best = -1, bestD = HOVER_PX * HOVER_PX;
    for (let i = cx - 1; i <= cx + 1; i++) for (let j = cy - 1; j <= cy + 1; j++) {
      const cell = s.grid.get(`${i},${j}`);
      if (!cell) continue;
      for (let k = 0; k < cell.length; k += 3) {
        const d = (cell[k] - px) ** 2 + (cell[k + 1] - py) ** 2;
        if (d < bestD) { bestD = d; best = cell[k + 2]; }
      }
    }
    return best;
  }

  function showTip(s, e) {
    const gd = s.gd, tiles = meta(gd).tiles;
    if (!tiles || s.dragging || !gd._fullLayout || !gd._fullLayout.xaxis) return;
    const r = gd.getBoundingClientRect(), px = e.clientX - r.left, py = e.clientY - r.top;
    const i = inPlotArea(gd, px, py) ? nearest(s, px, py) : -1;
    if (!Number.isInteger(i) || i < 0 || i >= tiles.count) { hideTip(s); return; }
    const scale = Math.max(1, Math.round(TILE_PX / tiles.height)), w = tiles.width * scale, h = tiles.height * scale;
    const tip = s.tip, url = `gradio_api/file=${tiles.url}`;
    if (tip.dataset.url !== url) {
      tip.dataset.url = url;
      tip.style.backgroundImage = `url("${url}")`;
    }
    tip.style.width = `${w}px`;
    tip.style.height = `${h}px`;
    tip.style.backgroundSize = `${tiles.columns * w}px auto`;
    tip.style.backgroundPosition = `-${(i % tiles.columns) * w}px -${Math.floor(i / tiles.columns) * h}px`;
    // Above-left of the cursor: plotly's own label (index, label) sits to the right of the point.
    const left = e.clientX - w - 16, top = e.clientY - h - 16;
    tip.style.left = `${left < 4 ? e.clientX + 16 : left}px`;
    tip.style.top = `${top < 4 ? e.clientY + 16 : top}px`;
    tip.dataset.index = String(i);
    tip.style.display = "block";
  }

  function hook(s, gd) {
    const key = mapKey(gd);
    if (key !== s.key) { s.key = key; s.at = null; }  // another model or projection: the old marker means nothing
    s.gd = gd;
    showPageSpec(s, gd);
    if (getComputedStyle(gd).position === "static") gd.style.position = "relative";
    s.marker = document.createElement("div");
    s.marker.className = "vae-marker";
    s.marker.id = `map_${s.side}_marker`;
    gd.appendChild(s.marker);
    const tiles = meta(gd).tiles;
    if (tiles) new Image().src = `gradio_api/file=${tiles.url}`;  // fetched now, not at the first hover
    let onPoint = false, afterDrag = false;
    gd.on("plotly_click", () => { onPoint = true; });
    s.grid = null;
    gd.on("plotly_afterplot", () => { s.grid = null; place(s); });
    gd.on("plotly_relayout", () => { s.grid = null; place(s); });
    gd.on("plotly_restyle", () => { s.grid = null; });  // a legend click hides or shows a class
    gd.addEventListener("mousemove", (e) => showTip(s, e));
    gd.addEventListener("mouseleave", () => hideTip(s));
    gd.addEventListener("click", (e) => {
      if (!e.target.classList || !e.target.classList.contains("nsewdrag")) return;
      const at = toData(gd, e.clientX, e.clientY);
      setTimeout(() => {
        if (!onPoint && !afterDrag && at.every(Number.isFinite)) { s.at = at; place(s); decodeHere(s); send(s); }
        onPoint = false; afterDrag = false;
      }, 0);
    });
    // A press on the marker drags it (captured before plotly's zoom box sees it).
    gd.addEventListener("mousedown", (e) => {
      if (!s.at || e.button !== 0 || s.marker.style.display === "none") return;
      const r = gd.getBoundingClientRect(), [px, py] = toPixel(gd, s.at[0], s.at[1]);
      if (Math.hypot(e.clientX - r.left - px, e.clientY - r.top - py) > GRAB_PX) return;
      e.stopPropagation();
      e.preventDefault();
      s.dragging = true;
      hideTip(s);
      let frame = 0;
      const move = (m) => {
        m.stopPropagation();  // plotly's hover never sees a drag's moves: the frame is the decode's alone
        const at = toData(gd, m.clientX, m.clientY);
        if (!at.every(Number.isFinite)) return;
        s.at = at;
        place(s);
        if (decodeHere(s)) return;  // in the page, within this event: the server hears the final position only
        if (!frame) frame = requestAnimationFrame(() => { frame = 0; send(s); });  // at most one per frame
      };
      const up = (u) => {
        document.removeEventListener("mousemove", move, true);
        document.removeEventListener("mouseup", up, true);
        if (frame) { cancelAnimationFrame(frame); frame = 0; }
        move(u);
        if (frame) { cancelAnimationFrame(frame); frame = 0; }
        send(s);  // the final position, always
        s.dragging = false;
        afterDrag = true;  // the click that ends a drag is not a new click
        setTimeout(() => { afterDrag = false; }, 50);
      };
      document.addEventListener("mousemove", move, true);
      document.addEventListener("mouseup", up, true);
    }, true);
    place(s);
  }

  function attach(side, element, props, trigger) {
    const s = sides[side] = {side, props, trigger, gd: null, key: null, at: null, marker: null, sent: 0,
                             dragging: false, specShown: false};
    s.tip = document.createElement("div");
    s.tip.className = "vae-tile";
    s.tip.id = `map_${side}_tile`;
    document.body.appendChild(s.tip);
    const check = () => {
      const gd = document.querySelector(`#map_${side} .js-plotly-plot`);
      if (gd && gd !== s.gd && gd._fullLayout && gd._fullLayout.xaxis && typeof gd.on === "function") hook(s, gd);
      else if (s.gd && !s.specShown) showPageSpec(s, s.gd);
    };
    new MutationObserver(check).observe(document.body, {childList: true, subtree: true});
    check();
  }

  // The typed coordinates box: put both maps' markers at (x, y) of each map (the server decodes them).
  function mark(text) {
    const parts = String(text || "").split(/[,;\s]+/).filter(Boolean).map(Number);
    if (parts.length !== 2 || !parts.every(Number.isFinite)) return;
    for (const s of Object.values(sides)) { s.at = parts; place(s); decodeHere(s); }
  }

  window.vaeMapTouch = {attach, mark, sides};
})();
