// `report <runDir>`: rebuild results.csv and index.html from a run folder alone (format: ./README.md).
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

export function buildReport(runDir: string): BuiltReport {
  const run = readRun(runDir);
  const csvPath = join(runDir, "results.csv");
  const stats = runIntervals(run);
  writeResultsCsv(run, csvPath, stats);
  const htmlPath = writeHtml(run, stats);
  return { csvPath, htmlPath, cells: run.cells.length, pending: run.pending.length };
}
