// Plotly animations inside gr.Plot (figures.page_animation). Gradio 6 draws a plot with
// Plotly.react(div, data, layout, config) and drops the figure's frames, so plotly's own play button and epoch
// slider would find nothing to animate. The frames come in layout.meta.frames instead; this script adds them to
// the plot (Plotly.addFrames) whenever a figure with a new layout.meta.frames_key is drawn, and removes old ones
// when a figure without frames replaces an animation. Then play and the slider run in the page, frame by frame,
// with no request to the server. The plot's div gets data-vae-frames="<count>" once its frames are in.
(() => {
  if (window.vaeMotion) return;

  function sync(gd) {
    const meta = (gd.layout && gd.layout.meta) || {};
    const key = meta.frames_key || null;
    if (gd.__vaeFramesKey === key || !window.Plotly || !gd._transitionData) return;
    gd.__vaeFramesKey = key;
    gd.removeAttribute("data-vae-frames");
    // One queue of frame edits per plot: a new figure can arrive while the last one's frames are still being
    // added, and its edits must see what is there by then. Frames go one at a time, the last first: plotly.js
    // sorts a list of indices to delete as strings ("10" before "2") and then deletes past the end of the
    // shortened list once there are more than ten ("Cannot read properties of undefined (reading 'name')").
    gd.__vaeFrameEdits = (gd.__vaeFrameEdits || Promise.resolve()).then(async () => {
      if (gd.__vaeFramesKey !== key) return;  // a newer figure came meanwhile: its own edit follows
      let left;
      while ((left = (gd._transitionData._frames || []).length) > 0) await window.Plotly.deleteFrames(gd, [left - 1]);
      if (key && Array.isArray(meta.frames)) {
        await window.Plotly.addFrames(gd, meta.frames);
        if (gd.__vaeFramesKey === key) gd.setAttribute("data-vae-frames", String(meta.frames.length));
      }
    }).catch((e) => console.error("vae-explorer: could not set the animation's frames", e));
  }

  function hook(gd) {
    if (gd.__vaeMotionHooked) return;
    gd.__vaeMotionHooked = true;
    gd.on("plotly_afterplot", () => sync(gd));  // every new figure Gradio draws into this div
    sync(gd);
  }

  function scan() {
    for (const gd of document.querySelectorAll(".js-plotly-plot")) {
      if (gd._fullLayout && typeof gd.on === "function") hook(gd);
    }
  }

  new MutationObserver(scan).observe(document.documentElement, {childList: true, subtree: true});
  scan();
  window.vaeMotion = {sync, scan};
})();
