// A made-up run folder in the exact format the sweep runner writes: for the report's tests, and for working on
// the page's look without running a sweep. Metrics follow the qualitative shape of GLIDE's Fig. 6 (fidelity up,
// diversity down with the scale; FID U-shaped) but are invented numbers.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gridImage, writePng } from "../data/png.ts";
import { hashSeed, Rng } from "../data/rng.ts";
import { render, sampleScene } from "../data/world.ts";
import type { CellRecord } from "./run-folder.ts";

interface SyntheticCell {
  strategy: string;
  params: Record<string, unknown>;
  scale: number;
  steps: number;
}

const CELLS: SyntheticCell[] = [
  ...[1, 2, 3, 5].map((scale) => ({ strategy: "cfg", params: {}, scale, steps: 50 })),
  ...[1, 3].map((scale) => ({ strategy: "cfg", params: {}, scale, steps: 25 })),
  ...[0, 1, 3].map((scale) => ({ strategy: "clip", params: { base: { kind: "none" } }, scale, steps: 50 })),
  ...[0, 0.7].flatMap((phi) =>
    [2, 4].map((scale) => ({ strategy: "cfg-rescale", params: { phi }, scale, steps: 50 })),
  ),
];

const fmtId = (c: SyntheticCell, i: number) =>
  `${String(i).padStart(2, "0")}-${c.strategy}-s${c.scale}-n${c.steps}`.replace(/[^A-Za-z0-9._=+-]/g, "_");

export interface SyntheticRunOptions {
  /** Images per grid (default 4) and their side (default 16). */
  images?: number;
  size?: number;
}

/** Write config.json, env.json, cells/<id>/{record.json,grid.png}, one unfinished cell and real/ into `dir`. */
export function writeSyntheticRun(dir: string, opts: SyntheticRunOptions = {}): CellRecord[] {
  const n = opts.images ?? 4;
  const size = opts.size ?? 16;
  const seeds = Array.from({ length: n }, (_, i) => 1000 + i);
  mkdirSync(join(dir, "cells"), { recursive: true });
  writeFileSync(
    join(dir, "config.json"),
    JSON.stringify(
      {
        name: "synthetic",
        model: "zoo/base",
        strategies: [{ kind: "cfg" }, { kind: "clip" }, { kind: "cfg-rescale", phi: [0, 0.7] }],
        scales: [0, 1, 2, 3, 4, 5],
        steps: [25, 50],
        sampler: "ddim",
        metrics: ["fid", "precision_recall", "inception_score", "clip_score", "prompt_accuracy"],
        seeds,
      },
      null,
      2,
    ),
  );
  writeFileSync(
    join(dir, "env.json"),
    JSON.stringify(
      {
        gitCommit: "0123456789abcdef0123456789abcdef01234567",
        gitDirty: false,
        backend: "wasm",
        node: process.version,
        platform: `${process.platform}-${process.arch}`,
        startedAt: "2025-01-01T00:00:00.000Z",
        finishedAt: "2025-01-01T01:00:00.000Z",
        timings: { totalSeconds: 3600 },
      },
      null,
      2,
    ),
  );
  // Same seeds in every cell: the scene behind image i is the same, only "guidance" (a tint here) changes.
  const base = seeds.map((s) => render(sampleScene(new Rng(hashSeed("synthetic", s))), size));
  const records: CellRecord[] = [];
  CELLS.forEach((c, i) => {
    const cellId = fmtId(c, i);
    const cellDir = join(dir, "cells", cellId);
    mkdirSync(cellDir, { recursive: true });
    const s = c.scale;
    const boost = c.strategy === "clip" ? 0.6 : c.strategy === "cfg-rescale" ? 0.9 : 1;
    const phi = typeof c.params.phi === "number" ? c.params.phi : 0;
    const stepsPenalty = c.steps < 50 ? 1.5 : 0;
    const rng = new Rng(hashSeed("synthetic-metrics", cellId));
    const jitter = () => 0.01 * (rng.next() - 0.5);
    const metrics: Record<string, number | null> = {
      fid: 12 + 2.5 * (s * boost - 1.5) ** 2 + stepsPenalty + 3 * phi,
      precision: Math.min(0.99, 0.45 + 0.1 * s * boost + jitter()),
      recall: Math.max(0.05, 0.7 - 0.09 * s * boost + 0.05 * phi + jitter()),
      is: 8 + 3 * s * boost + jitter(),
      clip_score: 22 + 2 * s * boost + (c.strategy === "clip" ? 1 : 0) + jitter(),
      clip_score_clamped: 22 + 2 * s * boost + jitter(),
      accuracy: Math.min(1, 0.3 + 0.12 * s * boost),
      // One NaN metric, as a record written with JSON null, must not break the CSV or the charts.
      diversity_clip: c.strategy === "clip" && s === 0 ? null : Math.max(0, 0.5 - 0.06 * s),
    };
    const nfe = c.steps * (c.strategy === "clip" ? (s === 0 ? 1 : 2) : s === 1 ? 1 : 2);
    const record: CellRecord = {
      cellId,
      strategy: c.strategy,
      strategyParams: c.params,
      scale: s,
      steps: c.steps,
      sampler: "ddim",
      metrics,
      perPrompt: [
        { promptId: "colour/0", text: "a red circle", suite: "colour", n, metrics: { accuracy: 0.5 } },
      ],
      nfe,
      secondsPerImage: nfe * 0.004,
      grid: { cols: 2, n, size, seeds, prompts: seeds.map((sd) => `prompt for seed ${sd}`) },
    };
    const tint = Math.min(1, s / 5);
    const imgs = base.map((img) => img.map((v, k) => (k % 3 === 0 ? v + (1 - v) * tint * 0.3 : v)));
    const grid = gridImage(imgs, size, 2, 1, 1);
    writePng(join(cellDir, "grid.png"), grid.data, grid.width, grid.height);
    writeFileSync(join(cellDir, "record.json"), JSON.stringify(record, null, 2));
    records.push(record);
  });
  // A cell whose sampling was interrupted: its folder exists, its record does not.
  mkdirSync(join(dir, "cells", "99-cfg-s7-n50"), { recursive: true });
  mkdirSync(join(dir, "real"), { recursive: true });
  writeFileSync(
    join(dir, "real", "info.json"),
    JSON.stringify({ source: "world renders", n: 1000, seed: 7, features: "eval-clip" }, null, 2),
  );
  const real = gridImage(base, size, 2, 1, 1);
  writePng(join(dir, "real", "grid.png"), real.data, real.width, real.height);
  return records;
}
