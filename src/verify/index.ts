// Golden-reference verification: compares this port against outputs of the official PyTorch code stored as
// manifest.json + <section>/*.npy. Any problem with the files becomes a failing row naming the file, never a crash,
// so one bad array does not hide the other sections' results.
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { tf } from "../core/engine.ts";
import type { Runtime } from "../onnx/choice.ts";
import { failRow, loadManifest, NOT_IN_GOLDEN, type Row, SectionContext } from "./common.ts";
import { SECTIONS } from "./registry.ts";

export type { Row } from "./common.ts";
export { SECTIONS } from "./registry.ts";

export interface VerifyOptions {
  /** Runtime of the denoisers' forwards (default TensorFlow.js); notes of the rows it affects name it. */
  runtime?: Runtime;
}

export interface VerifyResult {
  rows: Row[];
  passed: number;
  failed: number;
  /** Rows of optional intermediate arrays the golden set does not hold. */
  skipped: number;
}

/**
 * Runs the requested sections (default: every known section whose folder exists) against the golden directory.
 * Unknown or missing sections give failing rows.
 */
export async function verifyReference(
  dir: string,
  sections?: string[],
  opts: VerifyOptions = {},
): Promise<VerifyResult> {
  await tf.ready();
  const rows: Row[] = [];
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    rows.push(failRow("-", "golden directory", `${dir}: directory not found`));
    return { rows, passed: 0, failed: 1, skipped: 0 };
  }
  const { manifest, error } = loadManifest(dir);
  const exists = (name: string) => existsSync(join(dir, name)) && statSync(join(dir, name)).isDirectory();
  const wanted = sections && sections.length > 0 ? sections : SECTIONS.map((s) => s.name).filter(exists);
  if (wanted.length === 0)
    rows.push(failRow("-", "sections", `${dir}: none of the known sections is present`));
  for (const name of wanted) {
    const checker = SECTIONS.find((s) => s.name === name);
    if (!checker) {
      rows.push(
        failRow(name, "section", `unknown section (known: ${SECTIONS.map((s) => s.name).join(", ")})`),
      );
      continue;
    }
    if (!exists(name) && !checker.fixture) {
      rows.push(failRow(name, "section", `${name}/: directory not found in ${dir}`));
      continue;
    }
    const ctx = new SectionContext(dir, name, manifest, error, opts.runtime ?? "tfjs");
    try {
      const got = await checker.run(ctx);
      if (got.length === 0) rows.push(failRow(name, "section", "no cases found"));
      rows.push(...got);
    } catch (err) {
      rows.push(failRow(name, "section", `error: ${(err as Error).message.split("\n")[0]}`));
    }
  }
  const passed = rows.filter((r) => r.pass && !r.skipped).length;
  const skipped = rows.filter((r) => r.skipped).length;
  return { rows, passed, failed: rows.length - passed - skipped, skipped };
}

const fmt = (x: number) => (Number.isNaN(x) ? "-" : x === 0 ? "0" : x.toExponential(2));

/** A plain-text table of the rows, ending with the line `N passed, M failed` (and `, K skipped` when some were). */
export function formatRows(rows: readonly Row[]): string {
  const header = ["section", "case", "max|Δ|", "rel", "tol", "tol from", "result", "note"];
  const body = rows.map((r) => [
    r.section,
    r.case,
    fmt(r.maxAbs),
    fmt(r.rel),
    r.skipped ? "-" : r.tol === 0 ? "exact" : fmt(r.tol),
    r.skipped ? "-" : (r.tolFrom ?? "fixed"),
    r.skipped ? "SKIP" : r.pass ? "PASS" : "FAIL",
    r.note ?? "",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  const passed = rows.filter((r) => r.pass && !r.skipped).length;
  const skipped = rows.filter((r) => r.skipped).length;
  const failed = rows.length - passed - skipped;
  const totals = `${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped (${NOT_IN_GOLDEN})` : ""}`;
  return [line(header), ...body.map(line), totals, ""].join("\n");
}
