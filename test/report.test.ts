import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { buildReport, CSV_COLUMNS, readRun, reportView } from "../src/report/index.ts";
import { runIntervals } from "../src/report/intervals.ts";
import { writeSyntheticRun } from "../src/report/synthetic.ts";

/** RFC 4180: quoted fields may hold commas, quotes (doubled) and newlines. */
function parse(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ",") {
      row.push(field);
      field = "";
    } else if (ch === "\n") {
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
    } else if (ch !== "\r") field += ch;
  }
  if (field !== "" || row.length) rows.push([...row, field]);
  return rows;
}

describe("report", () => {
  const dir = mkdtempSync(join(tmpdir(), "gl-report-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const records = writeSyntheticRun(dir);

  it("writes results.csv with one row per finished cell and stable columns", () => {
    const { csvPath, htmlPath, cells, pending } = buildReport(dir);
    assert.equal(cells, records.length, "every record reported");
    assert.equal(pending, 1, "the unfinished cell is counted, not reported");
    assert.ok(existsSync(htmlPath), "index.html written");
    assert.ok(existsSync(join(dir, "plotly.min.js")), "plotly.min.js copied beside the page");
    const rows = parse(readFileSync(csvPath, "utf8")) as string[][];
    const [header, ...body] = rows;
    assert.deepEqual(
      header,
      [
        "cell_id",
        "strategy",
        "param.base.kind",
        "param.phi",
        "scale",
        "steps",
        "sampler",
        "n",
        ...["clip_score", "clip_score_torchmetrics"].flatMap((k) => [k, `${k}_lo`, `${k}_hi`]),
        ...["fd", "kid"].flatMap((k) => [k, `${k}_lo`, `${k}_hi`, `${k}_floor`]),
        ...["precision", "recall", "is", "diversity_clip", "accuracy"].flatMap((k) => [
          k,
          `${k}_lo`,
          `${k}_hi`,
        ]),
        "nfe",
        "seconds_per_image",
      ],
      "header",
    );
    assert.equal(body.length, records.length, "one row per cell");
    const col = (name: string) => header!.indexOf(name);
    // Canonical order: strategy, other params, scale, steps.
    assert.deepEqual(
      body.map((r) => r[col("strategy")]),
      [...records.map((r) => r.strategy)].sort(),
      "rows sorted by strategy",
    );
    const clip0 = body.find((r) => r[col("strategy")] === "clip" && r[col("scale")] === "0");
    assert.ok(clip0, "clip at scale 0 present");
    assert.equal(clip0[col("diversity_clip")], "", "a null metric is an empty field");
    assert.equal(clip0[col("param.base.kind")], "none", "nested params flattened");
    assert.equal(clip0[col("param.phi")], "", "params a strategy lacks are empty");
    for (const r of body) {
      const rec = records.find((x) => x.cellId === r[col("cell_id")]);
      assert.ok(rec, `row ${r[0]} matches a record`);
      assert.equal(Number(r[col("fd")]), rec.metrics.fd, `fd of ${rec.cellId} round-trips exactly`);
      assert.equal(r[col("n")], "36", "n: the cell's samples");
      const lo = Number(r[col("accuracy_lo")]);
      const hi = Number(r[col("accuracy_hi")]);
      const acc = Number(r[col("accuracy")]);
      assert.ok(
        lo <= acc && acc <= hi && hi - lo > 0.05,
        `accuracy ${acc} inside its interval [${lo}, ${hi}]`,
      );
      assert.ok(
        Number(r[col("fd_lo")]) >= 0 && Number(r[col("fd_hi")]) > Number(r[col("fd_lo")]),
        "FD interval",
      );
      assert.equal(Number(r[col("nfe")]), rec.nfe, `nfe of ${rec.cellId}`);
      assert.equal(Number(r[col("steps")]), rec.steps, `steps of ${rec.cellId}`);
    }
    const documented = CSV_COLUMNS.map((c) => c.column);
    for (const fixed of ["cell_id", "strategy", "scale", "steps", "sampler", "nfe", "seconds_per_image"]) {
      assert.ok(documented.includes(fixed), `column ${fixed} documented`);
    }
  });

  it("plots metrics against NFE per image, one curve per sampler, when a run has several samplers", () => {
    const run = readRun(dir);
    const one = reportView(run, runIntervals(run));
    assert.equal(one.vsNfe.length, 0, "one sampler: no NFE charts");
    assert.match(one.notes.vsNfe.join(" "), /same sampler/);
    // The same cells, cfg's 25-step ones relabelled as a two-evaluation sampler.
    const relabel = (r: (typeof run.cells)[number]["record"]) =>
      r.strategy === "cfg" && r.steps === 25 ? { ...r, sampler: "heun", nfe: r.nfe * 2 } : r;
    const two = { ...run, cells: run.cells.map((c) => ({ ...c, record: relabel(c.record) })) };
    const view = reportView(two, runIntervals(two));
    const fd = view.vsNfe.find((c) => c.title === "FD");
    assert.ok(fd, "an FD-against-NFE chart");
    assert.equal(fd.xTitle, "NFE per image");
    const heun = fd.traces.filter((t) => t.name.endsWith("· heun"));
    const ddim = fd.traces.filter((t) => t.name.endsWith("· ddim"));
    assert.ok(heun.length > 0 && ddim.length > 0, "one curve per sampler");
    const nfes = new Set(two.cells.filter((c) => c.record.sampler === "heun").map((c) => c.record.nfe));
    assert.ok(
      heun.every((t) => t.x.every((x) => nfes.has(x as number))),
      "x is the cells' NFE",
    );
    assert.ok(!view.vsNfe.some((c) => c.title === "NFE per image"), "NFE is the axis, not a metric");
  });

  it("draws one trade-off curve per strategy variant with points labelled by scale", () => {
    const run = readRun(dir);
    const view = reportView(run, runIntervals(run));
    assert.deepEqual(
      view.tradeoffs.map((c) => c.title),
      ["Precision vs recall", "IS vs FD", "CLIP score vs FD"],
      "the three Fig. 6 panels",
    );
    const pr = view.tradeoffs[0]!;
    const names = pr.traces.map((t) => t.name).sort();
    assert.deepEqual(
      names,
      [
        "cfg · 25 steps",
        "cfg · 50 steps",
        "cfg-rescale (phi=0) · 50 steps",
        "cfg-rescale (phi=0.7) · 50 steps",
        "clip · 50 steps",
      ],
      "curves split by varying params and steps",
    );
    const cfg = pr.traces.find((t) => t.name === "cfg · 50 steps")!;
    assert.deepEqual(cfg.text, ["s=1", "s=2", "s=3", "s=5"], "points ordered and labelled by scale");
    assert.ok(
      view.vsScale.length > 0 && view.vsSteps.length > 0,
      "metric-vs-scale and vs-steps charts exist",
    );
    assert.ok(
      view.vsScale.some((c) => c.title === "NFE per image"),
      "cost plotted against scale",
    );
    assert.ok(
      view.tradeoffs.every((c) => c.traces.every((t) => t.yLo && t.yHi && t.xLo && t.xHi)),
      "every trade-off point carries x and y intervals",
    );
    assert.equal(view.tradeoffs[1]!.xTitle, "FD, synthetic 8-d", "FD's axis names its feature space");
  });

  it("writes the CSVW metadata sidecar with the feature space, bootstrap and floor", () => {
    const meta = JSON.parse(readFileSync(join(dir, "results.csv-metadata.json"), "utf8"));
    assert.equal(meta["guidance-lab:featureSpace"], "synthetic 8-d");
    assert.equal(meta["guidance-lab:bootstrap"].b, 200, "B from the run's config");
    assert.ok(meta["guidance-lab:floor"].fd.value > 0, "real-vs-real FD floor");
    const fd = meta.tableSchema.columns.find((c: { name: string }) => c.name === "fd");
    assert.match(fd["dc:description"], /synthetic 8-d/);
  });

  it("embeds data safely and references images relatively", () => {
    const html = readFileSync(join(dir, "index.html"), "utf8");
    assert.ok(html.includes('<script src="plotly.min.js"></script>'), "plotly referenced beside the page");
    assert.ok(!/(src|href)="(\/|file:|https?:)/.test(html), "no absolute or remote URLs");
    for (const r of records)
      assert.ok(html.includes(`cells/${r.cellId}/grid.png`), `grid of ${r.cellId} shown`);
    assert.ok(html.includes("real/grid.png"), "reference grid shown");
    assert.ok(html.includes("0123456789ab"), "git commit shown");
  });

  it("documents every results.csv column in the README", () => {
    const readme = readFileSync(new URL("../src/report/README.md", import.meta.url), "utf8");
    // Compare cells, not raw lines: a Markdown formatter may pad the table.
    const rows = readme
      .split("\n")
      .filter((l) => l.startsWith("|"))
      .map((l) =>
        l
          .split("|")
          .slice(1, -1)
          .map((c) => c.trim()),
      );
    for (const c of CSV_COLUMNS) {
      const row = rows.find((r) => r[0] === `\`${c.column}\``);
      assert.ok(row, `README has a row for ${c.column}`);
      assert.equal(row[1], c.description, `README row for ${c.column} matches CSV_COLUMNS`);
    }
  });

  it("writes the CSV and the page elsewhere when asked, leaving the run folder and its grids alone", () => {
    const run = mkdtempSync(join(tmpdir(), "gl-report-src-"));
    const out = join(mkdtempSync(join(tmpdir(), "gl-report-out-")), "page");
    try {
      writeSyntheticRun(run);
      const built = buildReport(run, { out });
      assert.equal(built.csvPath, join(out, "results.csv"));
      assert.equal(built.htmlPath, join(out, "index.html"));
      for (const f of ["results.csv-metadata.json", "plotly.min.js"]) assert.ok(existsSync(join(out, f)), f);
      for (const f of ["results.csv", "index.html"])
        assert.ok(!existsSync(join(run, f)), `${f} not in the run`);
      const html = readFileSync(built.htmlPath, "utf8");
      assert.ok(!html.includes("<img"), "no links to grids the page's folder lacks");
      assert.match(html, /sample grids stay in the run folder/);
      assert.equal(
        readFileSync(built.csvPath, "utf8"),
        readFileSync(buildReport(run).csvPath, "utf8"),
        "the same results.csv",
      );
    } finally {
      rmSync(run, { recursive: true, force: true });
      rmSync(join(out, ".."), { recursive: true, force: true });
    }
  });

  it("builds a page for a run with no finished cells yet", () => {
    const empty = mkdtempSync(join(tmpdir(), "gl-report-empty-"));
    try {
      writeFileSync(join(empty, "config.json"), "{}");
      const built = buildReport(empty);
      assert.equal(built.cells, 0, "no cells");
      const html = readFileSync(built.htmlPath, "utf8");
      assert.ok(html.includes("No finished cells yet."), "the page says why it is empty");
      assert.equal(
        readFileSync(built.csvPath, "utf8").trim(),
        "cell_id,strategy,scale,steps,sampler,n,nfe,seconds_per_image",
        "header only",
      );
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it("rejects a malformed record naming the file and field", () => {
    const bad = mkdtempSync(join(tmpdir(), "gl-report-bad-"));
    try {
      writeSyntheticRun(bad);
      const path = join(bad, "cells", `${records[0]!.cellId}`, "record.json");
      const rec = JSON.parse(readFileSync(path, "utf8"));
      rec.steps = "fifty";
      writeFileSync(path, JSON.stringify(rec));
      assert.throws(() => readRun(bad), /record\.json: steps:/);
    } finally {
      rmSync(bad, { recursive: true, force: true });
    }
  });
});
