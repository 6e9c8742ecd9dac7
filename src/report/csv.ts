// results.csv: one row per finished cell, for pandas/R/spreadsheets. Column names and order are stable so that
// analysis scripts survive new runs: fixed columns in a fixed order, strategy parameters and metrics in between,
// each group sorted (metrics in registry order, unknown ones after, alphabetically).
import { writeFileSync } from "node:fs";
import { stringify } from "csv-stringify/sync";
import { METRICS } from "../metrics/index.ts";
import type { RunIntervals } from "./intervals.ts";
import type { CellRecord, RunData } from "./run-folder.ts";

export interface ColumnDoc {
  /** Column name, or a pattern with `<...>` for a family of columns. */
  column: string;
  description: string;
}

/** The columns of results.csv, in order; the README's table is generated from this. */
export const CSV_COLUMNS: readonly ColumnDoc[] = [
  { column: "cell_id", description: "the cell's folder name under cells/" },
  { column: "strategy", description: "guidance strategy kind (e.g. cfg, clip, classifier, apg)" },
  {
    column: "param.<name>",
    description:
      "each strategy parameter other than kind and scale, nested ones dotted (param.base.kind); arrays and objects as JSON; empty where the strategy lacks it",
  },
  {
    column: "scale",
    description: "guidance scale (s in GLIDE; w = s − 1 in some papers: see the strategy's docs)",
  },
  { column: "steps", description: "sampling steps" },
  { column: "sampler", description: "sampler (e.g. ddpm, ddim)" },
  { column: "n", description: "samples in the cell (from its observations, else its grid)" },
  {
    column: "<metric>",
    description:
      "each metric key any cell recorded (see the metric registry, src/metrics/index.ts); empty where a cell lacks it or it was NaN",
  },
  {
    column: "<metric>_lo, <metric>_hi",
    description:
      "95% interval of the metric beside it: Wilson for accuracies, the paired within-prompt bootstrap for the Inception score (conditional on the run's prompts), else the paired prompt bootstrap (src/stats); empty for cells without observations",
  },
  {
    column: "fd_floor, kid_floor",
    description:
      "the run's real-vs-real FD and KID at its own N (a second real set against the first): what a perfect sampler would score",
  },
  { column: "nfe", description: "network evaluations per image (CFG counts 2 per step)" },
  { column: "seconds_per_image", description: "sampling wall-clock seconds per image" },
];

const FIXED_TAIL = ["nfe", "seconds_per_image"] as const;

/** Flatten nested parameter objects to dotted keys; arrays stay whole (their length may vary per cell). */
export function flattenParams(params: Record<string, unknown>, prefix = ""): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(params)) {
    if (prefix === "" && (k === "kind" || k === "scale")) continue;
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) Object.assign(out, flattenParams(v as never, key));
    else out[key] = v;
  }
  return out;
}

const REGISTRY_ORDER: readonly string[] = Object.values(METRICS).flatMap((m) => m.outputs.map((o) => o.key));

/** Metric keys recorded by any cell, registry order first; `nfe`/`seconds_per_image` are fixed columns. */
export function metricKeys(records: readonly CellRecord[]): string[] {
  const seen = new Set<string>();
  for (const r of records) for (const k of Object.keys(r.metrics)) seen.add(k);
  for (const k of FIXED_TAIL) seen.delete(k);
  const known = REGISTRY_ORDER.filter((k) => seen.has(k));
  const unknown = [...seen].filter((k) => !REGISTRY_ORDER.includes(k)).sort();
  return [...known, ...unknown];
}

export function paramKeys(records: readonly CellRecord[]): string[] {
  const seen = new Set<string>();
  for (const r of records) for (const k of Object.keys(flattenParams(r.strategyParams))) seen.add(k);
  return [...seen].sort();
}

/** Metric keys with an interval in some cell. */
function intervalKeys(stats: RunIntervals | undefined): Set<string> {
  return new Set(stats?.cells.flatMap((c) => Object.keys(c.stats)) ?? []);
}

/** Each metric column, followed by its interval and (FD, KID) the run's floor. */
function metricColumns(records: readonly CellRecord[], stats: RunIntervals | undefined): string[] {
  const withIv = intervalKeys(stats);
  return metricKeys(records).flatMap((k) => [
    k,
    ...(withIv.has(k) ? [`${k}_lo`, `${k}_hi`] : []),
    ...(stats?.floor?.stats[k] ? [`${k}_floor`] : []),
  ]);
}

/** The actual header of results.csv for these cells. */
export function csvColumns(records: readonly CellRecord[], stats?: RunIntervals): string[] {
  return [
    "cell_id",
    "strategy",
    ...paramKeys(records).map((k) => `param.${k}`),
    "scale",
    "steps",
    "sampler",
    "n",
    ...metricColumns(records, stats),
    ...FIXED_TAIL,
  ];
}

function cellValue(v: unknown): string | number {
  if (v === undefined || v === null) return "";
  if (typeof v === "number") return Number.isFinite(v) ? v : "";
  if (typeof v === "string") return v;
  if (typeof v === "boolean") return v ? "true" : "false";
  return JSON.stringify(v);
}

export function resultsRows(records: readonly CellRecord[], stats?: RunIntervals): (string | number)[][] {
  const params = paramKeys(records);
  const metrics = metricColumns(records, stats);
  return records.map((r) => {
    const flat = flattenParams(r.strategyParams);
    const cs = stats?.byId.get(r.cellId);
    const value = (col: string): unknown => {
      if (col in r.metrics) return r.metrics[col];
      const m = /^(.*)_(lo|hi|floor)$/.exec(col);
      if (!m) return undefined;
      if (m[2] === "floor") return stats?.floor?.stats[m[1]!]?.value;
      return cs?.stats[m[1]!]?.[m[2] as "lo" | "hi"];
    };
    return [
      r.cellId,
      r.strategy,
      ...params.map((k) => cellValue(flat[k])),
      r.scale,
      r.steps,
      r.sampler,
      cellValue(cs?.n ?? r.grid?.n),
      ...metrics.map((k) => cellValue(value(k))),
      cellValue(r.nfe),
      cellValue(r.secondsPerImage),
    ];
  });
}

/**
 * A text cell a spreadsheet would not run as a formula: one starting with =, +, -, @, tab or carriage return
 * (OWASP's CSV-injection list) gets a leading apostrophe, which spreadsheets show as text. Prompts and strategy
 * parameters are free text (a negative prompt `=HYPERLINK(...)` would otherwise become a live link). Numbers
 * stay numbers: a negative scale is written as a number, not as text.
 */
export function neutraliseCsvCell(v: string | number): string | number {
  return typeof v === "string" && /^[=+\-@\t\r]/.test(v) ? `'${v}` : v;
}

export function resultsCsv(run: RunData, stats?: RunIntervals): string {
  const records = run.cells.map((c) => c.record);
  return stringify(
    [csvColumns(records, stats), ...resultsRows(records, stats)].map((row) => row.map(neutraliseCsvCell)),
  );
}

/**
 * results.csv-metadata.json: the W3C "CSV on the Web" sidecar (CSVW, found by appending -metadata.json to the CSV's
 * name) naming each column's meaning, with the feature space the distribution metrics were computed in, the
 * bootstrap's B and seed, and the real-vs-real floor with its interval.
 */
export function resultsMetadata(run: RunData, stats?: RunIntervals): Record<string, unknown> {
  const records = run.cells.map((c) => c.record);
  const describe = (col: string): string => {
    const m = /^(.*)_(lo|hi|floor)$/.exec(col);
    const base = m && !describeMetricKeyOrFixed(col) ? m[1]! : col;
    const d = describeMetricKeyOrFixed(base) ?? "";
    const space =
      ["fd", "kid", "precision", "recall"].includes(base) && stats?.featureSpace
        ? ` (features: ${stats.featureSpace})`
        : "";
    if (m && base !== col) {
      if (m[2] === "floor") return `real-vs-real ${base} at the run's N${space}`;
      return `${m[2] === "lo" ? "lower" : "upper"} end of the 95% interval of ${base}${space}`;
    }
    return `${d}${space}`;
  };
  return {
    "@context": "http://www.w3.org/ns/csvw",
    url: "results.csv",
    "dc:description": "one row per finished cell of a guidance-lab sweep (src/report/README.md)",
    tableSchema: {
      columns: csvColumns(records, stats).map((name) => ({
        name,
        titles: name,
        "dc:description": describe(name),
      })),
    },
    ...(stats
      ? {
          "guidance-lab:featureSpace": stats.featureSpace ?? null,
          "guidance-lab:bootstrap": {
            b: stats.b,
            seed: stats.seed,
            groups: stats.groups.length,
            level: 0.95,
          },
          "guidance-lab:floor": stats.floor ? { n: stats.floor.n, ...stats.floor.stats } : null,
        }
      : {}),
  };
}

function describeMetricKeyOrFixed(col: string): string | undefined {
  for (const m of Object.values(METRICS)) {
    const o = m.outputs.find((x) => x.key === col);
    if (o) return o.description;
  }
  return CSV_COLUMNS.find((c) => c.column === col)?.description;
}

export function writeResultsCsv(run: RunData, path: string, stats?: RunIntervals): void {
  writeFileSync(path, resultsCsv(run, stats));
  writeFileSync(`${path}-metadata.json`, `${JSON.stringify(resultsMetadata(run, stats), null, 2)}\n`);
}
