// `report <runDir>`: rebuild results.csv and index.html from a run folder alone (format: ./README.md).
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { writeResultsCsv } from "./csv.ts";
import { writeHtml } from "./html.ts";
import { runIntervals } from "./intervals.ts";
import { readRun } from "./run-folder.ts";

export { type ColumnDoc, CSV_COLUMNS, csvColumns, resultsCsv } from "./csv.ts";
export { type ChartSpec, type ReportView, renderHtml, reportView, TRADEOFFS } from "./html.ts";
export { type CellRecord, cellRecordSchema, type RunData, readRun } from "./run-folder.ts";

export interface BuiltReport {
  csvPath: string;
  htmlPath: string;
  /** Finished cells reported. */
  cells: number;
  /** Cell folders without a record (unfinished). */
  pending: number;
}

/**
 * `out` (default: the run folder) receives results.csv, its metadata, index.html and plotly.min.js; a page written
 * elsewhere leaves the sample grids out (a run of hundreds of samples per cell has megabytes of them).
 */
export function buildReport(runDir: string, opts: { out?: string } = {}): BuiltReport {
  const run = readRun(runDir);
  const out = opts.out ?? runDir;
  mkdirSync(out, { recursive: true });
  const csvPath = join(out, "results.csv");
  const stats = runIntervals(run);
  writeResultsCsv(run, csvPath, stats);
  const htmlPath = writeHtml(run, stats, out);
  return { csvPath, htmlPath, cells: run.cells.length, pending: run.pending.length };
}
