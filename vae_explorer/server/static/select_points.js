// Box / lasso selections on plotly maps inside gr.Plot (Gradio 6 gives gr.Plot no select event). A figure whose
// layout.meta.select names it (the Attribute vectors map: "attribute") is hooked when drawn: plotly_selected keeps
// the test indices (the points' customdata) of the latest selection, deduplicated and sorted, and plotly_deselect
// forgets them. The page's buttons read them with window.vaeSelection.text("<elem_id of the gr.Plot>") and hand
// them to Python as a group's items. The plot's div gets data-vae-selected="<count>".
(() => {
  if (window.vaeSelection) return;
  const chosen = {};  // gr.Plot elem_id -> sorted test indices

  function holder(gd) {
    const block = gd.closest(".block[id]") || gd.closest("[id]");
    return block ? block.id : "";
  }

  function keep(gd, indices) {
    const id = holder(gd);
    chosen[id] = Array.from(new Set(indices)).sort((a, b) => a - b);
    gd.setAttribute("data-vae-selected", String(chosen[id].length));
  }

  function hook(gd) {
    if (gd.__vaeSelectHooked) return;
    gd.__vaeSelectHooked = true;
    gd.on("plotly_selected", (ev) => {
      const points = (ev && ev.points) || [];
      keep(gd, points.map((p) => Number(Array.isArray(p.customdata) ? p.customdata[0] : p.customdata))
                     .filter((i) => Number.isInteger(i) && i >= 0));
    });
    gd.on("plotly_deselect", () => keep(gd, []));
  }

  function scan() {
    for (const gd of document.querySelectorAll(".js-plotly-plot")) {
      const meta = (gd.layout && gd.layout.meta) || {};
      if (meta.select && typeof gd.on === "function") hook(gd);
    }
  }

  new MutationObserver(scan).observe(document.documentElement, {childList: true, subtree: true});
  scan();
  window.vaeSelection = {
    text: (id) => (chosen[id] || []).join(", "),
    chosen,
  };
})();
