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
  const draw = (c) => {
    const traces = c.traces.map((t) => ({
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
      customdata: t.cellIds,
      hovertemplate: `%{customdata}<br>${c.xTitle}: %{x}<br>${c.yTitle}: %{y}<extra>%{fullData.name}</extra>`,
      line: { color: t.color, dash: t.dash, width: 2 },
      marker: { color: t.color, size: 7 },
    }));
    const layout = {
      title: { text: c.title, font: { size: 14 } },
      font,
      margin: { l: 56, r: 20, t: 40, b: 44 },
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
