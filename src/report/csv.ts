// results.csv: one row per finished cell, for pandas/R/spreadsheets. Column names and order are stable so that
// analysis scripts survive new runs: fixed columns in a fixed order, strategy parameters and metrics in between,
// each group sorted (metrics in registry order, unknown ones after, alphabetically).
import { writeFileSync } from "node:fs";
import { stringify } from "csv-stringify/sync";
import { METRICS } from "../metrics/index.ts";
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
  {
    column: "<metric>",
    description:
      "each metric key any cell recorded (see the metric registry, src/metrics/index.ts); empty where a cell lacks it or it was NaN",
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

/** The actual header of results.csv for these cells. */
export function csvColumns(records: readonly CellRecord[]): string[] {
  return [
    "cell_id",
    "strategy",
    ...paramKeys(records).map((k) => `param.${k}`),
    "scale",
    "steps",
    "sampler",
    ...metricKeys(records),
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

export function resultsRows(records: readonly CellRecord[]): (string | number)[][] {
  const params = paramKeys(records);
  const metrics = metricKeys(records);
  return records.map((r) => {
    const flat = flattenParams(r.strategyParams);
    return [
      r.cellId,
      r.strategy,
      ...params.map((k) => cellValue(flat[k])),
      r.scale,
      r.steps,
      r.sampler,
      ...metrics.map((k) => cellValue(r.metrics[k])),
      cellValue(r.nfe),
      cellValue(r.secondsPerImage),
    ];
  });
}

export function resultsCsv(run: RunData): string {
  const records = run.cells.map((c) => c.record);
  return stringify([csvColumns(records), ...resultsRows(records)]);
}

export function writeResultsCsv(run: RunData, path: string): void {
  writeFileSync(path, resultsCsv(run));
}
