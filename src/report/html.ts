// index.html: a self-contained page that works offline from file:// and travels with its run folder. Plotly sits
// beside it as plotly.min.js; chart data is embedded as JSON; images are referenced by relative paths into cells/,
// so the folder can be zipped, moved or served as it is. Grouping and styling decisions are made here in
// TypeScript; the inlined client script only hands the prepared traces to Plotly.
import { copyFileSync, existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { basename, join, resolve } from "node:path";
import { describeMetricKey } from "../metrics/index.ts";
import { type CompareResult, compareRun, frontierSentence, samplesPerCell } from "./compare.ts";
import { CSV_COLUMNS, csvColumns, metricKeys, resultsRows } from "./csv.ts";
import {
  type ExplorerPanel,
  explorerPanelHtml,
  explorerQuery,
  writeExplorerPanel,
} from "./explorer-panel.ts";
import { type Gain, type GuideGainRow, type GuideGains, gainText } from "./guide-gain.ts";
import type { RunIntervals } from "./intervals.ts";
import type { CellRecord, RunCell, RunData } from "./run-folder.ts";
import { variantLabels } from "./variants.ts";

export interface ChartTrace {
  name: string;
  x: (number | null)[];
  y: (number | null)[];
  /** Point labels (the scale on trade-off plots). */
  text: string[];
  cellIds: string[];
  color: string;
  dash: string;
  /** 95% interval of each y (and of each x on trade-off plots); null where a point has none. */
  yLo?: (number | null)[];
  yHi?: (number | null)[];
  xLo?: (number | null)[];
  xHi?: (number | null)[];
  /** Samples behind each point. */
  n?: (number | null)[];
  /** Draw the interval as a shaded band rather than error bars (frontiers). */
  band?: boolean;
}

export interface ChartSpec {
  id: string;
  title: string;
  xTitle: string;
  yTitle: string;
  /** Show `text` beside the points (trade-off plots label each point with its scale). */
  labels: boolean;
  traces: ChartTrace[];
}

export interface ReportView {
  title: string;
  tradeoffs: ChartSpec[];
  /** Fidelity at matched diversity, one chart per (diversity, fidelity) pair (src/stats/frontier.ts). */
  frontiers: ChartSpec[];
  vsScale: ChartSpec[];
  vsSteps: ChartSpec[];
  /** Metrics against network evaluations per image, one curve per sampler: when a run has several samplers. */
  vsNfe: ChartSpec[];
  /** Guide-score gain against oracle gain, and the adversarial gap, per guide (src/report/guide-gain.ts). */
  guides: ChartSpec[];
  /** Why a section or chart is absent (missing metrics, a single step count, ...). */
  notes: { tradeoffs: string[]; vsScale: string[]; vsSteps: string[]; vsNfe: string[]; frontiers: string[] };
}

/** The three panels of GLIDE's Fig. 6, named y vs x. */
export const TRADEOFFS = [
  { id: "pr", title: "Precision vs recall", y: "precision", x: "recall" },
  { id: "is-fd", title: "IS vs FD", y: "is", x: "fd" },
  { id: "clip-fd", title: "CLIP score vs FD", y: "clip_score", x: "fd" },
] as const;

// Colour-blind-safe (Okabe–Ito, then Tableau): one colour per strategy variant across every chart.
const COLOURS = [
  "#0072B2",
  "#D55E00",
  "#009E73",
  "#CC79A7",
  "#E69F00",
  "#56B4E9",
  "#000000",
  "#F0E442",
  "#8c564b",
  "#7f7f7f",
];
const DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"];
/** SVG equivalents of Plotly's dash names, for the HTML legend. */
const SVG_DASH: Record<string, string> = {
  solid: "",
  dash: "6,3",
  dot: "2,3",
  dashdot: "6,3,2,3",
  longdash: "10,4",
  longdashdot: "10,4,2,4",
};

const nullIfNaN = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? null : v);

/** Shortest readable number: 3, 0.25, 1.2e-5. */
export function fmt(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "—";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(2);
  return String(Number(v.toPrecision(4)));
}

function metricValue(r: CellRecord, key: string): number | null {
  if (key === "nfe") return r.nfe;
  if (key === "seconds_per_image") return r.secondsPerImage;
  const v = r.metrics[key];
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

const AXIS_NAMES: Record<string, string> = {
  precision: "Precision (fraction in the real manifold)",
  recall: "Recall (fraction of real covered)",
  is: "Inception score (classifier, 24 classes)",
  fd: "FD",
  kid: "KID (MMD², cubic kernel)",
  kid_std: "KID subset std",
  clip_score: "CLIP score (100·cos, eval CLIP)",
  clip_score_torchmetrics: "CLIPScore, torchmetrics (max(mean, 0))",
  clip_score_guidance: "CLIP score (100·cos, guidance CLIP)",
  clip_score_guidance_torchmetrics: "CLIPScore, torchmetrics, guidance CLIP",
  accuracy: "Accuracy (oracle, fraction correct)",
  diversity_clip: "Diversity (1 − cos within prompt, eval CLIP)",
  diversity_pixel: "Diversity (RMS pixel difference within prompt)",
  nfe: "NFE per image",
  seconds_per_image: "seconds per image",
};

/** A chart title: the label without its parenthesis (the axis carries the whole label). */
export function shortLabel(key: string): string {
  return metricLabel(key).replace(/ \(.*\)$/, "");
}

/** Human label of a metric key; FD and KID name their feature space when the run says (e.g. "FD, eval-CLIP 64-d"). */
export function metricLabel(key: string, featureSpace?: string): string {
  if ((key === "fd" || key === "kid") && featureSpace)
    return `${key === "fd" ? "FD" : "KID"}, ${featureSpace}`;
  const m = /^accuracy_(attr|suite)_(.+)$/.exec(key);
  if (m) return `Accuracy, ${m[1] === "attr" ? "attribute" : "suite"} ${m[2]}`;
  return AXIS_NAMES[key] ?? key;
}

interface Grouping {
  variant: Map<CellRecord, string>;
  colourOf: (variant: string) => string;
  multiSteps: boolean;
  multiSampler: boolean;
  stepsValues: number[];
  scaleValues: number[];
}

function grouping(records: readonly CellRecord[]): Grouping {
  const variant = variantLabels(records);
  const variants = [...new Set(records.map((r) => variant.get(r)!))];
  const stepsValues = [...new Set(records.map((r) => r.steps))].sort((a, b) => a - b);
  const scaleValues = [...new Set(records.map((r) => r.scale))].sort((a, b) => a - b);
  return {
    variant,
    colourOf: (v) => COLOURS[variants.indexOf(v) % COLOURS.length]!,
    multiSteps: stepsValues.length > 1,
    multiSampler: new Set(records.map((r) => r.sampler)).size > 1,
    stepsValues,
    scaleValues,
  };
}

/** Group records into curves; `key` decides membership, points are ordered by `order`. */
function curves(
  records: readonly CellRecord[],
  g: Grouping,
  key: (r: CellRecord) => string,
  name: (r: CellRecord) => string,
  order: (r: CellRecord) => number,
  dashOf: (r: CellRecord) => string,
  x: (r: CellRecord) => number | null,
  y: (r: CellRecord) => number | null,
  text: (r: CellRecord) => string,
  iv?: Intervals,
): ChartTrace[] {
  const groups = new Map<string, CellRecord[]>();
  for (const r of records) groups.set(key(r), [...(groups.get(key(r)) ?? []), r]);
  const traces: ChartTrace[] = [];
  for (const rs of groups.values()) {
    const pts = rs.filter((r) => x(r) !== null && y(r) !== null).sort((a, b) => order(a) - order(b));
    if (pts.length === 0) continue;
    const first = pts[0]!;
    const trace: ChartTrace = {
      name: name(first),
      x: pts.map(x),
      y: pts.map(y),
      text: pts.map(text),
      cellIds: pts.map((r) => r.cellId),
      color: g.colourOf(g.variant.get(first)!),
      dash: dashOf(first),
    };
    if (iv?.y) {
      trace.yLo = pts.map((r) => iv.y!(r)?.lo ?? null);
      trace.yHi = pts.map((r) => iv.y!(r)?.hi ?? null);
      trace.n = pts.map((r) => iv.y!(r)?.n ?? null);
    }
    if (iv?.x) {
      trace.xLo = pts.map((r) => iv.x!(r)?.lo ?? null);
      trace.xHi = pts.map((r) => iv.x!(r)?.hi ?? null);
    }
    traces.push(trace);
  }
  return traces;
}

type IntervalOf = (r: CellRecord) => { lo: number; hi: number; n: number } | undefined;
interface Intervals {
  x?: IntervalOf;
  y?: IntervalOf;
}

/** A metric is worth a chart when some cell has it and not every cell has the same value. */
function varies(records: readonly CellRecord[], key: string): boolean {
  const vals = new Set(records.map((r) => metricValue(r, key)).filter((v) => v !== null));
  return vals.size > 1;
}

export function reportView(run: RunData, stats?: RunIntervals, compare?: CompareResult): ReportView {
  const records = run.cells.map((c) => c.record);
  const g = grouping(records);
  const ivOf =
    (key: string): IntervalOf =>
    (r) => {
      const s = stats?.byId.get(r.cellId)?.stats[key];
      return s && Number.isFinite(s.lo) && Number.isFinite(s.hi) ? s : undefined;
    };
  const label = (key: string) => metricLabel(key, stats?.featureSpace);
  // The longest (usually the main) step count draws solid; shorter ones dashed.
  const stepsDesc = [...g.stepsValues].reverse();
  const dashBySteps = (r: CellRecord) => DASHES[stepsDesc.indexOf(r.steps) % DASHES.length]!;
  const scaleCurveKey = (r: CellRecord) => `${g.variant.get(r)}|${r.steps}|${r.sampler}`;
  const scaleCurveName = (r: CellRecord) =>
    [g.variant.get(r)!, g.multiSteps ? `${r.steps} steps` : "", g.multiSampler ? r.sampler : ""]
      .filter(Boolean)
      .join(" · ");
  /** Curves over the guidance scale, one per variant × steps × sampler. */
  const scaleCurves = (
    x: (r: CellRecord) => number | null,
    y: (r: CellRecord) => number | null,
    text: (r: CellRecord) => string,
    iv?: Intervals,
  ) => curves(records, g, scaleCurveKey, scaleCurveName, (r) => r.scale, dashBySteps, x, y, text, iv);
  const notes: ReportView["notes"] = { tradeoffs: [], vsScale: [], vsSteps: [], vsNfe: [], frontiers: [] };

  const tradeoffs: ChartSpec[] = [];
  for (const t of TRADEOFFS) {
    const traces = scaleCurves(
      (r) => metricValue(r, t.x),
      (r) => metricValue(r, t.y),
      (r) => `s=${fmt(r.scale)}`,
      { x: ivOf(t.x), y: ivOf(t.y) },
    );
    if (traces.length === 0) {
      notes.tradeoffs.push(`${t.title}: no cell recorded both '${t.y}' and '${t.x}'.`);
      continue;
    }
    tradeoffs.push({
      id: `tradeoff-${t.id}`,
      title: t.title,
      xTitle: label(t.x),
      yTitle: label(t.y),
      labels: true,
      traces,
    });
  }

  const frontiers: ChartSpec[] = [];
  if (!compare)
    notes.frontiers.push(
      "No cell has observations (cells/<id>/observations.json): no intervals or frontiers.",
    );
  else if (compare.frontiers.length === 0)
    notes.frontiers.push(
      "No two strategies share a range of recall or CLIP diversity (or fewer than two curves).",
    );
  for (const fr of compare?.frontiers ?? []) {
    const recordOf = (name: string) => {
      const id = compare!.curves.find((c) => c.name === name)?.cells[0];
      return records.find((x) => x.cellId === id);
    };
    const colour = (name: string) => {
      const r = recordOf(name);
      return r ? g.colourOf(g.variant.get(r)!) : COLOURS[0]!;
    };
    const dash = (name: string) => {
      const r = recordOf(name);
      return r ? dashBySteps(r) : "solid";
    };
    const names = fr.levels[0]!.values.map((v) => v.name);
    frontiers.push({
      id: `frontier-${fr.yKey}-${fr.xKey}`.replace(/[^A-Za-z0-9_-]/g, "_"),
      title: `${shortLabel(fr.yKey)} at matched ${fr.xKey === "recall" ? "recall" : "CLIP diversity"}`,
      xTitle: label(fr.xKey),
      yTitle: label(fr.yKey),
      labels: false,
      traces: names.map((name, i) => ({
        name,
        x: fr.levels.map((l) => l.level),
        y: fr.levels.map((l) => nullIfNaN(l.values[i]!.value)),
        yLo: fr.levels.map((l) => nullIfNaN(l.values[i]!.lo)),
        yHi: fr.levels.map((l) => nullIfNaN(l.values[i]!.hi)),
        text: fr.levels.map((l) =>
          l.best === name ? (l.resolved ? "best (resolved)" : "best (unresolved)") : "",
        ),
        cellIds: fr.levels.map(() => name),
        color: colour(name),
        dash: dash(name),
        band: true,
      })),
    });
  }

  const keys = [...metricKeys(records), "nfe", "seconds_per_image"].filter((k) => varies(records, k));
  const vsScale: ChartSpec[] = [];
  const vsSteps: ChartSpec[] = [];
  const vsNfe: ChartSpec[] = [];
  const samplers = [...new Set(records.map((r) => r.sampler))];
  if (records.length && !g.multiSampler)
    notes.vsNfe.push(`Every cell has the same sampler (${samplers[0]}): see the charts against steps.`);
  if (records.length === 0) {
    for (const list of Object.values(notes)) list.splice(0, list.length, "No finished cells yet.");
  } else {
    if (g.scaleValues.length < 2) notes.vsScale.push(`Every cell has the same scale (${g.scaleValues[0]}).`);
    if (g.stepsValues.length < 2)
      notes.vsSteps.push(`Every cell has the same step count (${g.stepsValues[0]}).`);
  }
  /** A metric against scale or steps, added only when it has a trace. */
  const metricChart = (into: ChartSpec[], id: string, xTitle: string, key: string, traces: ChartTrace[]) => {
    if (traces.length) {
      into.push({ id, title: shortLabel(key), xTitle, yTitle: label(key), labels: false, traces });
    }
  };
  keys.forEach((key, i) => {
    const y = (r: CellRecord) => metricValue(r, key);
    if (g.scaleValues.length >= 2) {
      const traces = scaleCurves(
        (r) => r.scale,
        y,
        (r) => r.cellId,
        { y: ivOf(key) },
      );
      metricChart(vsScale, `scale-${i}`, "guidance scale", key, traces);
    }
    if (g.stepsValues.length >= 2) {
      const traces = curves(
        records,
        g,
        (r) => `${g.variant.get(r)}|${r.scale}|${r.sampler}`,
        (r) =>
          [g.variant.get(r)!, `s=${fmt(r.scale)}`, g.multiSampler ? r.sampler : ""]
            .filter(Boolean)
            .join(" · "),
        (r) => r.steps,
        (r) => DASHES[g.scaleValues.indexOf(r.scale) % DASHES.length]!,
        (r) => r.steps,
        y,
        (r) => r.cellId,
        { y: ivOf(key) },
      );
      metricChart(vsSteps, `steps-${i}`, "sampling steps", key, traces);
    }
    if (g.multiSampler && key !== "nfe") {
      // Quality per network evaluation: samplers differ in evaluations per step (Heun 2, most 1; cfg doubles all).
      const traces = curves(
        records,
        g,
        (r) => `${g.variant.get(r)}|${r.scale}|${r.sampler}`,
        (r) => [g.variant.get(r)!, `s=${fmt(r.scale)}`, r.sampler].join(" · "),
        (r) => r.nfe,
        (r) => DASHES[samplers.indexOf(r.sampler) % DASHES.length]!,
        (r) => r.nfe,
        y,
        (r) => r.cellId,
        { y: ivOf(key) },
      );
      metricChart(vsNfe, `nfe-${i}`, "NFE per image", key, traces);
    }
  });
  const guides = compare?.guides ? guideCharts(compare.guides, records, g) : [];
  return {
    title: `Guidance sweep: ${basename(run.dir)}`,
    tradeoffs,
    frontiers,
    vsScale,
    vsSteps,
    vsNfe,
    guides,
    notes,
  };
}

/**
 * Guide strength (issue 19): per unit of guide score (CLIP guides: 100·cos; classifiers: log p), the guide's own
 * gain against the oracle's, one curve per guide from the unguided model (0, 0) out by scale; and the adversarial
 * gap of CLIP guides (own gain − evaluation-CLIP gain) against scale.
 */
function guideCharts(gains: GuideGains, records: readonly CellRecord[], g: Grouping): ChartSpec[] {
  const colour = (cell: string) => {
    const r = records.find((x) => x.cellId === cell);
    return r ? g.colourOf(g.variant.get(r)!) : COLOURS[0]!;
  };
  const byCurve = new Map<string, GuideGainRow[]>();
  for (const r of gains.rows) byCurve.set(r.curve, [...(byCurve.get(r.curve) ?? []), r]);
  const useAccuracy = gains.rows.some((r) => r.accuracy);
  const oracle = (r: GuideGainRow) => (useAccuracy ? r.accuracy : r.clipScore);
  const charts: ChartSpec[] = [];
  const iv = (x: Gain | undefined, k: "lo" | "hi" | "delta") => nullIfNaN(x?.[k]);
  for (const [id, title, unit, kinds] of [
    ["guide-gain-clip", "CLIP guides: own-score gain vs oracle gain", "100·cos", "clip"],
    [
      "guide-gain-classifier",
      "Classifier guides: own-score gain vs oracle gain",
      "log p(y | x)",
      "classifier",
    ],
  ] as const) {
    const traces: ChartTrace[] = [];
    for (const [curve, rows] of byCurve) {
      if (rows[0]!.guideKind !== kinds) continue;
      const rs = rows.filter((r) => oracle(r)).sort((a, b) => a.scale - b.scale);
      if (rs.length === 0) continue;
      // The unguided model is the origin of every curve: each point is a gain over it.
      traces.push({
        name: curve,
        x: [0, ...rs.map((r) => iv(oracle(r), "delta"))],
        y: [0, ...rs.map((r) => iv(r.guideScore, "delta"))],
        xLo: [null, ...rs.map((r) => iv(oracle(r), "lo"))],
        xHi: [null, ...rs.map((r) => iv(oracle(r), "hi"))],
        yLo: [null, ...rs.map((r) => iv(r.guideScore, "lo"))],
        yHi: [null, ...rs.map((r) => iv(r.guideScore, "hi"))],
        n: [null, ...rs.map((r) => r.guideScore.n)],
        text: ["unguided", ...rs.map((r) => `s=${fmt(r.scale)}`)],
        cellIds: [rs[0]!.reference, ...rs.map((r) => `${r.cell} (${r.verdict})`)],
        color: colour(rs[0]!.cell),
        // Classifier-free guidance scored by the guide: the reference, dotted.
        dash: rs[0]!.guided ? "solid" : "dot",
      });
    }
    if (traces.length)
      charts.push({
        id,
        title,
        xTitle: useAccuracy ? "Δ accuracy (oracle, fraction correct)" : "Δ CLIP score (eval CLIP, 100·cos)",
        yTitle: `Δ own score of the guide (${unit})`,
        labels: true,
        traces,
      });
  }
  const gapTraces: ChartTrace[] = [];
  for (const [curve, rows] of byCurve) {
    const rs = rows.filter((r) => r.gap).sort((a, b) => a.scale - b.scale);
    if (rs.length === 0) continue;
    gapTraces.push({
      name: curve,
      x: rs.map((r) => r.scale),
      y: rs.map((r) => iv(r.gap, "delta")),
      yLo: rs.map((r) => iv(r.gap, "lo")),
      yHi: rs.map((r) => iv(r.gap, "hi")),
      n: rs.map((r) => r.gap!.n),
      text: rs.map((r) => r.verdict),
      cellIds: rs.map((r) => r.cell),
      color: colour(rs[0]!.cell),
      dash: rs[0]!.guided ? "solid" : "dot",
    });
  }
  if (gapTraces.length)
    charts.push({
      id: "guide-gap",
      title: "Adversarial gap of CLIP guides",
      xTitle: "guidance scale",
      yTitle: "Δ own score − Δ eval CLIP (100·cos)",
      labels: false,
      traces: gapTraces,
    });
  return charts;
}

// ---------------------------------------------------------------------------------------------------------------
// HTML

const esc = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

/** Relative URL of a run-folder path, each segment escaped (cell ids are safe, but prompts in names may not be). */
const url = (rel: string) => rel.split("/").map(encodeURIComponent).join("/");

/** JSON inside <script>: `<` escaped so that no "</script>" or "<!--" in a prompt can end the element. */
const scriptJson = (v: unknown) => JSON.stringify(v).replace(/</g, "\\u003c");

function chartDivs(charts: readonly ChartSpec[], cls: string): string {
  return charts
    .map(
      (c) =>
        `<figure class="chart ${cls}"><div id="${esc(c.id)}" class="plot" data-chart="${esc(c.id)}"></div></figure>`,
    )
    .join("\n");
}

/**
 * One legend per section instead of one per chart: small multiples share their curves, and Plotly's per-chart
 * legends would repeat them and crowd the axes.
 */
function legendHtml(charts: readonly ChartSpec[]): string {
  const seen = new Map<string, ChartTrace>();
  for (const c of charts) for (const t of c.traces) if (!seen.has(t.name)) seen.set(t.name, t);
  if (seen.size === 0) return "";
  const items = [...seen.values()].map((t) => {
    const dash = SVG_DASH[t.dash] ? ` stroke-dasharray="${SVG_DASH[t.dash]}"` : "";
    return `<li><svg width="30" height="10" aria-hidden="true"><line x1="1" y1="5" x2="29" y2="5" stroke="${t.color}" stroke-width="2.5"${dash}/><circle cx="15" cy="5" r="3" fill="${t.color}"/></svg>${esc(t.name)}</li>`;
  });
  return `<ul class="legend">${items.join("")}</ul>`;
}

function notesHtml(notes: readonly string[]): string {
  return notes.map((n) => `<p class="note">${esc(n)}</p>`).join("\n");
}

/** Grid image scaled up by an integer factor (pixel art stays crisp), capped to a sensible on-screen width. */
function imgTag(src: string, size: { width: number; height: number } | undefined, alt: string): string {
  const factor = size ? Math.max(1, Math.min(4, Math.floor(320 / size.width))) : 1;
  const dims = size ? ` width="${size.width * factor}" height="${size.height * factor}"` : "";
  return `<img src="${url(src)}" alt="${esc(alt)}"${dims} loading="eager" decoding="async">`;
}

function gridsHtml(run: RunData, g: Grouping): string {
  if (run.cells.length === 0) return `<p class="note">No finished cells yet.</p>`;
  // One table per (steps, sampler): rows are strategy variants, columns guidance scales, all on the same seeds.
  const blocks = new Map<string, RunCell[]>();
  for (const c of run.cells) {
    const k = `${c.record.steps}|${c.record.sampler}`;
    blocks.set(k, [...(blocks.get(k) ?? []), c]);
  }
  const out: string[] = [];
  for (const cells of blocks.values()) {
    const first = cells[0]!.record;
    const scales = [...new Set(cells.map((c) => c.record.scale))].sort((a, b) => a - b);
    const variants = [...new Set(cells.map((c) => g.variant.get(c.record)!))];
    const rows = variants.map((v) => {
      const tds = scales.map((s) => {
        const here = cells.filter((c) => g.variant.get(c.record) === v && c.record.scale === s);
        if (here.length === 0) return `<td class="empty"></td>`;
        return `<td>${here
          .map((c) => {
            const img = c.grid
              ? imgTag(c.grid, c.gridSize, `${v}, scale ${fmt(s)}`)
              : `<span class="note">no grid.png</span>`;
            return `<figure class="cellgrid">${img}<figcaption>${esc(c.record.cellId)}</figcaption></figure>`;
          })
          .join("")}</td>`;
      });
      return `<tr><th scope="row"><span class="swatch" style="background:${g.colourOf(v)}"></span>${esc(v)}</th>${tds.join("")}</tr>`;
    });
    const seeds = cells.find((c) => c.record.grid?.seeds)?.record.grid?.seeds;
    const prompts = cells.find((c) => c.record.grid?.prompts)?.record.grid?.prompts;
    const caption = [
      `${first.steps} steps, ${esc(first.sampler)} sampler`,
      seeds ? `seeds ${esc(seeds.join(", "))}` : "",
    ]
      .filter(Boolean)
      .join(" · ");
    const promptList = prompts
      ? `<details><summary>Prompts, in grid order</summary><ol>${prompts.map((p) => `<li>${esc(p)}</li>`).join("")}</ol></details>`
      : "";
    out.push(`<div class="gridblock"><h3>${caption}</h3>${promptList}
<div class="scroll"><table class="grids"><thead><tr><th>strategy \\ scale</th>${scales
      .map((s) => `<th>${fmt(s)}</th>`)
      .join("")}</tr></thead><tbody>${rows.join("\n")}</tbody></table></div></div>`);
  }
  if (run.real?.grid) {
    out.push(
      `<div class="gridblock"><h3>Reference (real) images</h3><figure class="cellgrid">${imgTag(run.real.grid, run.real.gridSize, "reference images")}</figure></div>`,
    );
  }
  return out.join("\n");
}

function resultsTableHtml(run: RunData, stats?: RunIntervals): string {
  const records = run.cells.map((c) => c.record);
  const header = csvColumns(records, stats);
  const rows = resultsRows(records, stats);
  const better = (col: string) => describeMetricKey(col)?.better;
  return `<div class="scroll"><table class="results"><thead><tr>${header
    .map((h) => {
      const b = better(h);
      const title = describeMetricKey(h)?.description ?? CSV_COLUMNS.find((c) => c.column === h)?.description;
      return `<th${title ? ` title="${esc(title)}"` : ""}>${esc(h)}${b ? ` <span class="dir">${b === "higher" ? "↑" : "↓"}</span>` : ""}</th>`;
    })
    .join("")}</tr></thead><tbody>${rows
    .map(
      (r) =>
        `<tr>${r.map((v) => `<td${typeof v === "number" ? ' class="num"' : ""}>${esc(typeof v === "number" ? fmt(v) : v)}</td>`).join("")}</tr>`,
    )
    .join("\n")}</tbody></table></div>`;
}

function envSummary(env: Record<string, unknown> | undefined): string {
  if (!env) return "";
  const pick = (k: string) => (env[k] === undefined ? "" : String(env[k]));
  const items = [
    ["commit", pick("gitCommit").slice(0, 12) + (env.gitDirty ? " (dirty)" : "")],
    ["backend", pick("backend")],
    ["node", pick("node")],
    ["finished", pick("finishedAt")],
  ].filter(([, v]) => v && v !== " (dirty)");
  return items.map(([k, v]) => `<span><b>${esc(k!)}</b> ${esc(v!)}</span>`).join("");
}

const CSS = `
:root { --fg:#1d2327; --muted:#5f6b73; --line:#dde3e8; --bg:#f6f8fa; --card:#fff; --accent:#0072B2; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg); background:var(--bg); }
header { background:var(--card); border-bottom:1px solid var(--line); padding:20px 32px; }
header h1 { margin:0 0 6px; font-size:22px; }
header .meta { display:flex; flex-wrap:wrap; gap:6px 18px; color:var(--muted); font-size:13px; }
nav { margin-top:10px; display:flex; flex-wrap:wrap; gap:14px; font-size:14px; }
nav a { color:var(--accent); text-decoration:none; }
main { padding:8px 32px 48px; max-width:1500px; margin:0 auto; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:16px 20px; margin:20px 0; }
h2 { margin:0 0 4px; font-size:18px; }
h3 { margin:14px 0 6px; font-size:15px; color:var(--muted); font-weight:600; }
p.lead { margin:0 0 12px; color:var(--muted); font-size:14px; }
p.note { color:var(--muted); font-style:italic; font-size:13px; margin:6px 0; }
.charts { display:grid; gap:12px; }
.charts.big { grid-template-columns:repeat(auto-fit,minmax(420px,1fr)); }
.charts.small { grid-template-columns:repeat(auto-fill,minmax(340px,1fr)); }
figure.chart { margin:0; border:1px solid var(--line); border-radius:6px; }
.plot { width:100%; height:360px; }
.charts.small .plot { height:300px; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; font-size:13px; }
table.results th, table.results td { border-bottom:1px solid var(--line); padding:4px 8px; white-space:nowrap; }
table.results th { position:sticky; top:0; background:var(--card); text-align:left; }
table.results td.num { text-align:right; font-variant-numeric:tabular-nums; }
table.results tbody tr:hover { background:#eef4f9; }
.dir { color:var(--muted); font-weight:normal; }
table.grids th, table.grids td { padding:6px; vertical-align:top; text-align:center; }
table.grids th[scope=row] { text-align:left; white-space:nowrap; }
table.grids thead th { color:var(--muted); }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:6px; }
figure.cellgrid { margin:0; }
figure.cellgrid img { image-rendering:pixelated; max-width:100%; height:auto; border:1px solid var(--line); background:#222; }
figcaption { font-size:11px; color:var(--muted); }
details summary { cursor:pointer; color:var(--accent); font-size:14px; }
pre { background:var(--bg); border:1px solid var(--line); border-radius:6px; padding:12px; overflow:auto; max-height:480px; font-size:12px; }
.error { color:#b00020; font-weight:600; }
ul.legend { list-style:none; display:flex; flex-wrap:wrap; gap:4px 18px; padding:0; margin:4px 0 12px; font-size:13px; }
ul.legend li { display:flex; align-items:center; gap:6px; }
ul.headline { margin:4px 0 12px; padding-left:20px; font-size:14px; }
ul.sure { font-size:14px; }
table.compare tr.resolved td { font-weight:600; }
table.compare tr.unresolved td { color:var(--muted); }
`;

/** Interval text: "0.12 [0.08, 0.16]". */
const withIv = (s: { value: number; lo: number; hi: number } | undefined) =>
  s ? `${fmt(s.value)} [${fmt(s.lo)}, ${fmt(s.hi)}]` : "—";

/** "How sure": N per cell, the bootstrap, the noise floor, and which of the default differences are resolved. */
function howSureHtml(stats: RunIntervals | undefined, compare: CompareResult | undefined): string {
  if (!stats) {
    return `<p class="note">This run has no per-sample observations (written by newer sweeps), so no metric has an interval: read its differences as unresolved.</p>`;
  }
  const nText = samplesPerCell(stats);
  const floor = stats.floor
    ? `<li><b>Noise floor</b> (a second real set against the first, n = ${stats.floor.n}): FD ${withIv(stats.floor.stats.fd)}, KID ${withIv(stats.floor.stats.kid)}${stats.featureSpace ? ` in ${esc(stats.featureSpace)} features` : ""}. A cell's FD or KID within this range of it is as good as real data at this N.</li>`
    : "";
  const rows = compare?.rows ?? [];
  const resolved = rows.filter((r) => r.resolved);
  const list = resolved
    .map(
      (r) =>
        `<li>${esc(r.a)} vs ${esc(r.b)}: ${esc(r.metric)} Δ ${fmt(r.delta)} [${fmt(r.lo)}, ${fmt(r.hi)}], Holm p ${fmt(r.pHolm)}</li>`,
    )
    .join("");
  return `<ul class="sure">
<li><b>Samples per cell</b>: ${nText}, over ${stats.groups.length} prompts. Intervals are 95%: Wilson for accuracies (Newcombe's paired score interval for their differences); otherwise the percentile interval of ${stats.b} paired prompt-bootstrap replicates (seed ${stats.seed}), the same prompt draws in every cell. With few prompts the bootstrap runs somewhat narrow.</li>
${floor}
<li><b>Resolved differences</b> among the ${rows.length} default comparisons (interval excludes 0 and Holm-adjusted p &lt; 0.05): ${resolved.length}${resolved.length ? `<ul>${list}</ul>` : "; every other difference on this page is unresolved."}</li>
</ul>`;
}

function compareTableHtml(compare: CompareResult | undefined): string {
  if (!compare || compare.rows.length === 0)
    return `<p class="note">No pairs to compare (needs observations and at least one guided cell).</p>`;
  const head = ["a", "b", "metric", "a", "b", "Δ = a − b", "95% CI", "p", "Holm p", "test", "n", "verdict"];
  const body = compare.rows
    .map(
      (r) =>
        `<tr class="${r.resolved ? "resolved" : "unresolved"}"><td>${esc(r.a)}</td><td>${esc(r.b)}</td><td>${esc(r.metric)}</td><td class="num">${fmt(r.valueA)}</td><td class="num">${fmt(r.valueB)}</td><td class="num">${fmt(r.delta)}</td><td class="num">[${fmt(r.lo)}, ${fmt(r.hi)}]</td><td class="num">${fmt(r.p)}</td><td class="num">${fmt(r.pHolm)}</td><td>${r.test}</td><td class="num">${r.nA}/${r.nB}</td><td>${r.resolved ? "resolved" : "unresolved"}</td></tr>`,
    )
    .join("\n");
  return `<div class="scroll"><table class="results compare"><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead><tbody>${body}</tbody></table></div>`;
}

function guideSectionHtml(compare: CompareResult | undefined, charts: ChartSpec[], cls: string): string {
  const gains = compare?.guides;
  if (!gains) return "";
  const head = [
    "guide",
    "cell's strategy",
    "s",
    "n",
    "Δ guide score",
    "Δ accuracy",
    "Δ eval CLIP",
    "gap",
    "verdict",
  ];
  const body = gains.rows
    .map(
      (r) =>
        `<tr class="${r.verdict}"><td>${esc(r.guide)}</td><td>${esc(r.curve)}</td><td class="num">${fmt(r.scale)}</td><td class="num">${r.guideScore.n}</td><td class="num">${esc(gainText(r.guideScore))}</td><td class="num">${esc(gainText(r.accuracy))}</td><td class="num">${esc(gainText(r.clipScore))}</td><td class="num">${esc(gainText(r.gap))}</td><td>${r.verdict}</td></tr>`,
    )
    .join("\n");
  const peaks = gains.peaks
    .map(
      (p) =>
        `<li>${esc(p.curve)}: the oracle's gain peaks at s = ${fmt(p.scale)} (Δ accuracy ${esc(gainText(p.accuracy))})${p.beyond ? `; from there to s = ${fmt(p.beyond.scale)}, accuracy changes by ${esc(gainText(p.beyond.accuracy))} while the guide's own score changes by ${esc(gainText(p.beyond.guideScore))}` : ""}.</li>`,
    )
    .join("");
  return `<section id="guide-strength"><h2>Guide strength: guide-score gain vs oracle gain</h2>
<p class="lead">Each gradient-guided cell against the unguided cell on the same seeds: the gain in the guide's own score (what its gradient raises) beside the oracle's accuracy gain, with 95% intervals (accuracy: Newcombe's paired interval and exact McNemar; the rest: the paired prompt bootstrap; Holm over all gains). A guide exploited as GLIDE describes for CLIP guidance raises its own score without the oracle following: <b>adversarial</b> where accuracy falls (resolved), <b>unconfirmed</b> where the guide's gain is resolved and the oracle's is not. For CLIP guides the gap is the own-score gain minus the evaluation CLIP's gain (same units, an independent CLIP). Dotted curves: classifier-free guidance scored by the same guide, which it does not optimise (the reference).</p>
${legendHtml(charts)}<div class="charts ${cls}">${chartDivs(charts, cls)}</div>
<ul class="sure">${peaks}</ul>
<div class="scroll"><table class="results guides"><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead><tbody>${body}</tbody></table></div></section>`;
}

function headlineHtml(compare: CompareResult | undefined): string {
  if (!compare?.frontiers.length) return "";
  const n = samplesPerCell(compare.stats);
  return `<ul class="headline">${compare.frontiers.map((f) => `<li>${esc(frontierSentence(f, n))}</li>`).join("")}</ul>`;
}

/** The page's HTML; `clientJs` is inlined (see client.js). */
export function renderHtml(
  run: RunData,
  clientJs: string,
  stats?: RunIntervals,
  explorer?: ExplorerPanel,
  /** Where the sample grids are when the page is written outside the run folder (they are not copied). */
  gridsElsewhere?: string,
): string {
  const compare = stats ? compareRun(run, { stats }) : undefined;
  const view = reportView(run, stats, compare);
  const records = run.cells.map((c) => c.record);
  const g = grouping(records);
  const strategies = [...new Set(records.map((r) => r.strategy))];
  const data = {
    charts: [
      ...view.frontiers,
      ...view.tradeoffs,
      ...view.guides,
      ...view.vsScale,
      ...view.vsSteps,
      ...view.vsNfe,
    ],
  };
  const pending = run.pending.length ? `<span><b>unfinished cells</b> ${run.pending.length}</span>` : "";
  const sectionCharts = (charts: ChartSpec[], cls: string, notes: string[]) =>
    `${notesHtml(notes)}${legendHtml(charts)}<div class="charts ${cls}">${chartDivs(charts, cls)}</div>`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(view.title)}</title>
<style>${CSS}</style>
</head>
<body>
<header>
<h1>${esc(view.title)}</h1>
<div class="meta"><span><b>cells</b> ${run.cells.length}</span>${pending}<span><b>strategies</b> ${esc(strategies.join(", "))}</span>${envSummary(run.env)}</div>
<nav><a href="#tradeoffs">Trade-offs</a><a href="#how-sure">How sure</a><a href="#compare">Comparisons</a>${compare?.guides ? '<a href="#guide-strength">Guide strength</a>' : ""}<a href="#vs-scale">vs scale</a><a href="#vs-steps">vs steps</a><a href="#vs-nfe">vs NFE</a><a href="#samples">Samples</a><a href="#results">Results</a>${explorer ? '<a href="#explorer">Explore</a>' : ""}<a href="#config">Config</a><a href="results.csv">results.csv</a></nav>
</header>
<main>
<section id="tradeoffs"><h2>Fidelity–diversity trade-offs (GLIDE Fig. 6)</h2>
<p class="lead">Guidance scales of different strategies are not commensurate, so strategies are compared where they give the same diversity: fidelity interpolated along each strategy's curve at common levels of recall and CLIP diversity, with 95% bands from the paired prompt bootstrap.</p>
${headlineHtml(compare)}${sectionCharts(view.frontiers, "big", view.notes.frontiers)}
<h3>GLIDE's three panels</h3>
<p class="lead">One curve per strategy, points labelled by guidance scale s, bars the 95% intervals. Precision (fidelity) against recall (coverage); Inception score and CLIP score against FD.</p>
${sectionCharts(view.tradeoffs, "big", view.notes.tradeoffs)}</section>
<section id="how-sure"><h2>How sure</h2>
${howSureHtml(stats, compare)}</section>
<section id="compare"><h2>Paired comparisons</h2>
<p class="lead">Each strategy's best cell against the other strategies' best and against the conditional model (<code>guidance-lab compare</code> writes the same as compare.csv, and takes other pairs). Δ's interval is paired (same x_T per sample, same prompt draws per replicate); for accuracy, Δ's interval is Newcombe's paired score interval and p the exact McNemar test on the per-sample verdicts; otherwise p is the bootstrap's; Holm-adjusted over all rows.</p>
${compareTableHtml(compare)}</section>
${guideSectionHtml(compare, view.guides, "big")}
<section id="vs-scale"><h2>Metrics against guidance scale</h2>
${sectionCharts(view.vsScale, "small", view.notes.vsScale)}</section>
<section id="vs-steps"><h2>Metrics against sampling steps</h2>
${sectionCharts(view.vsSteps, "small", view.notes.vsSteps)}</section>
<section id="vs-nfe"><h2>Metrics against network evaluations</h2>
<p class="lead">Per sampler (dash), each point one step count: quality per NFE per image (cfg counts two per step, Heun and DPM-2 two per step).</p>
${sectionCharts(view.vsNfe, "small", view.notes.vsNfe)}</section>
<section id="samples"><h2>Samples</h2>
<p class="lead">Strategy × guidance scale, every grid on the same seeds and prompts, so differences are the strategy's alone.</p>
${gridsElsewhere ? `<p class="note">The sample grids stay in the run folder (${esc(gridsElsewhere)}); this page was written elsewhere without them.</p>` : gridsHtml(run, g)}</section>
<section id="results"><h2>Results</h2>
<p class="lead">Every finished cell (also in <a href="results.csv">results.csv</a>); ↑/↓ mark the better direction.</p>
${resultsTableHtml(run, stats)}</section>
${explorer ? explorerPanelHtml(explorer, esc, explorerQuery(run.config)) : ""}
<section id="config"><h2>Configuration and environment</h2>
<details open><summary>config.json</summary><pre>${esc(JSON.stringify(run.config, null, 2))}</pre></details>
${run.env ? `<details><summary>env.json</summary><pre>${esc(JSON.stringify(run.env, null, 2))}</pre></details>` : ""}
${run.real?.info ? `<details><summary>real/info.json</summary><pre>${esc(JSON.stringify(run.real.info, null, 2))}</pre></details>` : ""}
</section>
</main>
<script src="plotly.min.js"></script>
<script type="application/json" id="report-data">${scriptJson(data)}</script>
<script>
${clientJs}
</script>
</body>
</html>
`;
}

/** Path of Plotly's bundle in node_modules. */
export function plotlyBundlePath(): string {
  return createRequire(import.meta.url).resolve("plotly.js-dist-min");
}

/** Write index.html and plotly.min.js into the run folder; returns the page's path. */
export function writeHtml(run: RunData, stats?: RunIntervals, out = run.dir): string {
  const clientJs = readFileSync(new URL("./client.js", import.meta.url), "utf8");
  const htmlPath = join(out, "index.html");
  const elsewhere = resolve(out) === resolve(run.dir) ? undefined : basename(resolve(run.dir));
  writeFileSync(htmlPath, renderHtml(run, clientJs, stats, writeExplorerPanel(out), elsewhere));
  const src = plotlyBundlePath();
  const dst = join(out, "plotly.min.js");
  if (!existsSync(dst) || statSync(dst).size !== statSync(src).size) copyFileSync(src, dst);
  return htmlPath;
}
