// `npm run bench -- --quickstart`: the main job's wall time (configs/quickstart.yaml, what `npm start` runs) once
// per runtime of the denoisers' forwards, each into a fresh folder so nothing is resumed. Guidance gradients and the
// metrics run on TensorFlow.js in both, so the ratio is what the runtime choice buys a user end to end.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_ROOT } from "../core/paths.ts";
import { onnxUnavailable } from "../onnx/runtime.ts";
import { runSweep } from "../sweep/runner.ts";
import type { Row } from "./engine.ts";

export const QUICKSTART_CONFIG = join(REPO_ROOT, "configs", "quickstart.yaml");

export interface QuickstartBenchOptions {
  /** Sweep config to time (default the quickstart). */
  config?: string;
  /** Runtimes to time, in order (default ONNX Runtime when it loads, then TensorFlow.js). */
  runtimes?: ("onnx" | "tfjs")[];
  /** Progress lines from the sweeps (default true). */
  progress?: boolean;
}

export async function benchQuickstart(opts: QuickstartBenchOptions = {}): Promise<Row[]> {
  const config = opts.config ?? QUICKSTART_CONFIG;
  const onnxMissing = await onnxUnavailable();
  const runtimes = opts.runtimes ?? [...(onnxMissing ? [] : (["onnx"] as const)), "tfjs"];
  const rows: Row[] = [];
  for (const runtime of runtimes) {
    const out = mkdtempSync(join(tmpdir(), `gl-bench-quickstart-${runtime}-`));
    try {
      const t0 = performance.now();
      const r = await runSweep(config, { out, runtime, quiet: !(opts.progress ?? true) });
      const ms = performance.now() - t0;
      rows.push({
        name: "quickstart sweep",
        backend: runtime,
        value: r.finished.length / (ms / 60_000),
        unit: "cells/min",
        ms,
        detail: `${r.finished.length} cells of ${config}, fresh run folder, metrics and report included`,
      });
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }
  return rows;
}

/** "quickstart sweep: onnx 8.7 min, tfjs 30.1 min (3.46x faster on onnx)". */
export function quickstartSummary(rows: Row[]): string {
  if (!rows.length) return "";
  const min = (r: Row) => `${r.backend} ${(r.ms / 60_000).toFixed(1)} min`;
  const onnx = rows.find((r) => r.backend === "onnx");
  const tfjs = rows.find((r) => r.backend === "tfjs");
  const ratio = onnx && tfjs ? ` (${(tfjs.ms / onnx.ms).toFixed(2)}x faster on onnx)` : "";
  return `quickstart sweep: ${rows.map(min).join(", ")}${ratio}\n`;
}
