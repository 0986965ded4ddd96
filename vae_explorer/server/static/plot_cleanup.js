// Gradio 6 draws each new figure of a gr.Plot into a new div and drops the old one without Plotly.purge.
// Plotly keeps a removed plot alive through the listeners it registered outside it (the responsive chart's
// window resize handler among them), so every map or chart redrawn stayed in the page's memory: about 2.6 MB
// per redraw of a 359-point map, 26 MB after ten projection switches (`benchmarks/long_visit.py` found the
// JS heap growing with each figure). Purging each plot once it has left the document keeps the heap flat.
(() => {
  if (window.vaePlotCleanup) return;
  // Not at once: plotly may still have a redraw queued for a plot Gradio has just replaced (its automargin
  // pass), which fails on a purged plot. A few seconds later the plot is settled, and still gone or not.
  const SETTLE_MS = 3000;
  let purged = 0;
  const purge = (node) => {
    if (!(node instanceof Element) || !window.Plotly) return;
    const plots = node.classList.contains("js-plotly-plot") ? [node] : [...node.querySelectorAll(".js-plotly-plot")];
    if (plots.length) setTimeout(() => {
      for (const gd of plots) {
        if (gd.isConnected || !gd._fullLayout) continue;  // moved back, or purged already
        try { window.Plotly.purge(gd); purged += 1; } catch (e) { /* a half-built plot: nothing to release */ }
      }
    }, SETTLE_MS);
  };
  new MutationObserver((mutations) => {
    for (const m of mutations) for (const node of m.removedNodes) purge(node);
  }).observe(document.documentElement, {childList: true, subtree: true});
  window.vaePlotCleanup = {purged: () => purged};
})();
