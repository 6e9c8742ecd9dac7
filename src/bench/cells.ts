// Quickstart-sized cells on the shipped zoo, one per strategy of the quickstart (cfg, classifier, CLIP at their
// middle scales), 50 DDPM steps, 6 prompts × 4 samples in one batch of 24, every quickstart metric: seconds per
// image of sampling and of metrics, as the sweep records them, and each strategy's ratio to cfg's. From the same
// cells, the images per second of a 1,000-sample cell is ESTIMATED: sampling scales per image (batches of 24), and
// metrics are taken to scale per image too (their embedding forwards do; FD and precision/recall grow faster, but
// are a small part at these sizes).
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runSweep } from "../sweep/runner.ts";
import { modelsDir } from "../zoo/registry.ts";
import type { Row } from "./engine.ts";

const ZOO = ["denoiser", "classifier", "noised-clip", "eval-clip"];

// No `metrics:` key: every metric, as the quickstart lists (a list here went stale when `fid` became `fd`).
export const CELLS_CONFIG = `prompts:
  - { suite: colour, n: 6, seed: 0 }
strategies:
  - { kind: cfg, scales: [3] }
  - { kind: classifier, scales: [1] }
  - { kind: clip, scales: [3] }
steps: [50]
sampler: ddpm
samplesPerPrompt: 4
seed: 0
batchSize: 24
`;

interface CellRecord {
  strategy: string;
  grid: { n: number };
  timings: { samplingSeconds: number; metricsSeconds: number };
}

export interface CellsResult {
  rows: Row[];
  /** Seconds per image (sampling) per strategy and runtime, e.g. "onnx/clip". */
  perImage: Map<string, number>;
  /** Why nothing ran, when nothing did. */
  skipped?: string;
}

export async function benchCells(runtimes: ("onnx" | "tfjs")[]): Promise<CellsResult> {
  const missing = ZOO.filter((n) => !existsSync(join(modelsDir(), n, "model.json")));
  if (missing.length)
    return {
      rows: [],
      perImage: new Map(),
      skipped: `zoo models ${missing.join(", ")} not in ${modelsDir()}`,
    };
  const rows: Row[] = [];
  const perImage = new Map<string, number>();
  for (const runtime of runtimes) {
    const dir = mkdtempSync(join(tmpdir(), `gl-bench-cells-${runtime}-`));
    try {
      const config = join(dir, "cells.yaml");
      writeFileSync(config, CELLS_CONFIG);
      const out = join(dir, "run");
      const r = await runSweep(config, { out, runtime, quiet: true });
      const records = r.finished.map(
        (id) => JSON.parse(readFileSync(join(out, "cells", id, "record.json"), "utf8")) as CellRecord,
      );
      const cfg = records.find((c) => c.strategy === "cfg");
      const cfgPer = cfg ? cfg.timings.samplingSeconds / cfg.grid.n : Number.NaN;
      for (const c of records) {
        const n = c.grid.n;
        const sample = c.timings.samplingSeconds / n;
        const metrics = c.timings.metricsSeconds / n;
        perImage.set(`${runtime}/${c.strategy}`, sample);
        rows.push({
          name: `cell s/image ${c.strategy}`,
          backend: runtime,
          value: sample + metrics,
          unit: "s/image",
          ms: 1000 * (c.timings.samplingSeconds + c.timings.metricsSeconds),
          detail: `${n} images, 50 DDPM steps, batch 24: sampling ${sample.toFixed(3)} s/image (${(sample / cfgPer).toFixed(2)}x cfg's), metrics ${metrics.toFixed(3)} s/image (${((100 * metrics) / (sample + metrics)).toFixed(0)}% of the cell)`,
        });
        const estimate = 1000 / (1000 * sample + (c.timings.metricsSeconds * 1000) / n);
        rows.push({
          name: `1,000-sample cell ${c.strategy}`,
          backend: runtime,
          value: estimate,
          unit: "image/s",
          ms: 1000 / estimate,
          detail: `ESTIMATED from the ${n}-image cell above (sampling and metrics scaled per image); ${(1000 / estimate / 60).toFixed(1)} min per cell`,
        });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return { rows, perImage };
}
