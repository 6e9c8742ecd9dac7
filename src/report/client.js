// Inlined into index.html by html.ts. Plain browser JavaScript (no build step, no modules) so the page opens from
// file:// anywhere; every decision about what to draw was made when the page was built.
(() => {
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const plots = data.charts.filter((c) => document.getElementById(c.id));
  const fail = (msg) => {
    for (const c of plots) {
      const el = document.getElementById(c.id);
      el.innerHTML = "";
      const p = document.createElement("p");
      p.className = "error";
      p.textContent = msg;
      el.appendChild(p);
    }
  };
  if (typeof Plotly === "undefined") {
    fail("plotly.min.js did not load: it must sit beside index.html.");
    window.reportReady = Promise.resolve(false);
    return;
  }
  const font = { family: 'system-ui,-apple-system,"Segoe UI",Roboto,sans-serif', size: 12, color: "#1d2327" };
  const axis = (title) => ({
    title: { text: title },
    zeroline: false,
    gridcolor: "#e8edf1",
    linecolor: "#b8c2ca",
    automargin: true,
  });
  const fmt = (v) => (v === null || v === undefined ? "—" : Number(v.toPrecision(4)));
  // Plotly error bars take distances from the point; a missing bound draws no bar on that side.
  const bars = (v, lo, hi) =>
    lo && hi
      ? {
          type: "data",
          symmetric: false,
          array: v.map((y, i) => (y === null || hi[i] === null ? null : Math.max(0, hi[i] - y))),
          arrayminus: v.map((y, i) => (y === null || lo[i] === null ? null : Math.max(0, y - lo[i]))),
          thickness: 1.2,
          width: 3,
        }
      : undefined;
  const ivText = (lo, hi, i) => (lo && hi && lo[i] !== null ? ` [${fmt(lo[i])}, ${fmt(hi[i])}]` : "");
  /** Band traces (upper edge, then lower edge filled up to it) drawn under a curve. */
  const band = (t) => {
    const keep = t.x.map((_, i) => t.yLo[i] !== null && t.yHi[i] !== null);
    const xs = t.x.filter((_, i) => keep[i]);
    const fill = `${t.color}33`;
    const edge = { width: 0, color: fill };
    return [
      {
        type: "scatter",
        mode: "lines",
        x: xs,
        y: t.yHi.filter((_, i) => keep[i]),
        line: edge,
        hoverinfo: "skip",
        showlegend: false,
      },
      {
        type: "scatter",
        mode: "lines",
        x: xs,
        y: t.yLo.filter((_, i) => keep[i]),
        line: edge,
        fill: "tonexty",
        fillcolor: fill,
        hoverinfo: "skip",
        showlegend: false,
        name: `${t.name} band`,
      },
    ];
  };
  const draw = (c) => {
    const traces = c.traces.flatMap((t) => {
      const hover = t.x.map(
        (x, i) =>
          `${t.cellIds[i]}<br>${c.xTitle}: ${fmt(x)}${ivText(t.xLo, t.xHi, i)}<br>${c.yTitle}: ${fmt(t.y[i])}${ivText(t.yLo, t.yHi, i)}${t.n && t.n[i] !== null ? `<br>N = ${t.n[i]}` : ""}${t.yLo ? "<br>(95% interval)" : ""}`,
      );
      const main = {
        type: "scatter",
        mode: c.labels ? "lines+markers+text" : "lines+markers",
        name: t.name,
        x: t.x,
        y: t.y,
        text: t.text,
        textposition: "top center",
        textfont: { size: 10, color: t.color },
        // Scale labels at the plot's edge would otherwise be cut off.
        cliponaxis: false,
        hovertext: hover,
        hovertemplate: "%{hovertext}<extra>%{fullData.name}</extra>",
        line: { color: t.color, dash: t.dash, width: 2 },
        marker: { color: t.color, size: 7 },
      };
      if (t.band) return [...(t.yLo ? band(t) : []), main];
      const ey = bars(t.y, t.yLo, t.yHi);
      const ex = bars(t.x, t.xLo, t.xHi);
      if (ey) main.error_y = { ...ey, color: t.color };
      if (ex) main.error_x = { ...ex, color: t.color };
      return [main];
    });
    const layout = {
      // Left-aligned, with the toolbar stacked vertically at the right edge, so the toolbar never covers it.
      title: { text: c.title, font: { size: 14 }, x: 0.01, xanchor: "left" },
      modebar: { orientation: "v" },
      font,
      margin: { l: 56, r: 36, t: 40, b: 44 },
      xaxis: axis(c.xTitle),
      yaxis: axis(c.yTitle),
      // The section's HTML legend serves every chart in it.
      showlegend: false,
      paper_bgcolor: "#fff",
      plot_bgcolor: "#fff",
      hovermode: "closest",
    };
    return Plotly.newPlot(c.id, traces, layout, { responsive: true, displaylogo: false });
  };
  // A promise the browser test (and anyone scripting the page) can await.
  window.reportReady = Promise.all(plots.map(draw)).then(
    () => true,
    (e) => {
      console.error(e);
      return false;
    },
  );
})();
