// A made-up run folder in the exact format the sweep runner writes: for the report's tests, and for working on
// the page's look without running a sweep. Per-sample observations are drawn to follow the qualitative shape of
// GLIDE's Fig. 6 (fidelity up, diversity down with the scale; FD U-shaped) and the records' metrics are computed
// from them, so values and intervals agree as in a real run.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gridImage, writePng } from "../data/png.ts";
import { render, sampleScene } from "../data/world.ts";
import type { CellObservations } from "../metrics/observations.ts";
import { runStats } from "../stats/run-stats.ts";
import { hashSeed, Rng } from "../util/rng.ts";
import { writeCellObservations, writeReferenceObservations } from "./observations.ts";
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
  /** Prompts (default 6) and samples per prompt (default 6) behind each cell's observations. */
  prompts?: number;
  samplesPerPrompt?: number;
}

const FEATURE_DIM = 8;

function gaussianRows(rng: Rng, n: number, mean: number, sd: number): Float32Array {
  return Float32Array.from(
    { length: n * FEATURE_DIM },
    (_, i) => (i % FEATURE_DIM < 2 ? mean : 0) + sd * rng.normal(),
  );
}

/** Observations of one synthetic cell: stronger guidance moves features off the real mean and shrinks their spread. */
function syntheticObservations(c: SyntheticCell, promptId: string[], cellId: string): CellObservations {
  const rng = new Rng(hashSeed("synthetic-obs", cellId));
  const paired = (i: number) => new Rng(hashSeed("synthetic-sample", i)).next();
  const boost = c.strategy === "clip" ? 0.6 : c.strategy === "cfg-rescale" ? 0.9 : 1;
  const phi = typeof c.params.phi === "number" ? c.params.phi : 0;
  const g = c.scale * boost;
  const n = promptId.length;
  const features = gaussianRows(
    rng,
    n,
    0.25 * Math.abs(g - 1.5) + 0.2 * phi + (c.steps < 50 ? 0.15 : 0),
    1 / (1 + 0.25 * g),
  );
  const pAcc = Math.min(0.97, 0.3 + 0.12 * g);
  const classes = 6;
  const probs = new Float32Array(n * classes);
  for (let i = 0; i < n; i++) {
    const logits = Array.from({ length: classes }, (_, j) => (j === i % classes ? 1 + g : 0) + rng.normal());
    const m = Math.max(...logits);
    const e = logits.map((l) => Math.exp(l - m));
    const sum = e.reduce((a, b) => a + b, 0);
    e.forEach((v, j) => {
      probs[i * classes + j] = v / sum;
    });
  }
  const groups = [...new Set(promptId)];
  return {
    promptId,
    suite: promptId.map(() => "colour"),
    features: { dim: FEATURE_DIM, data: features },
    clipScore: promptId.map(() => 22 + 2 * g + (c.strategy === "clip" ? 1 : 0) + 2 * rng.normal()),
    classProbs: { dim: classes, data: probs },
    // The same uniform per sample in every cell: a sample right at a low scale stays right at a higher one.
    correct: promptId.map((_, i) => paired(i) < pAcc),
    // The guidance CLIP's own score: CLIP guidance raises it faster than the oracle's accuracy, as an exploited
    // guide would (the guide-strength section's adversarial gap).
    guideScores: {
      "noised-clip": promptId.map(
        (_, i) => 20 + 4 * paired(i) + (c.strategy === "clip" ? 2.5 * c.scale : 0.5 * g) + rng.normal(),
      ),
    },
    failed: promptId.map((_, i) => (paired(i) < pAcc ? [] : ["colour"])),
    ...(c.strategy === "clip" && c.scale === 0
      ? {}
      : {
          diversityClip: Object.fromEntries(
            groups.map((id) => [id, Math.max(0, 0.5 - 0.06 * c.scale + 0.02 * rng.normal())]),
          ),
        }),
  };
}

/** Write config.json, env.json, cells/<id>/{record.json,grid.png}, one unfinished cell and real/ into `dir`. */
export function writeSyntheticRun(dir: string, opts: SyntheticRunOptions = {}): CellRecord[] {
  const n = opts.images ?? 4;
  const size = opts.size ?? 16;
  const promptId = Array.from(
    { length: (opts.prompts ?? 6) * (opts.samplesPerPrompt ?? 6) },
    (_, i) => `colour/${Math.floor(i / (opts.samplesPerPrompt ?? 6))}`,
  );
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
        metrics: ["fd", "kid", "precision_recall", "inception_score", "clip_score", "prompt_accuracy"],
        seeds,
        bootstrap: { b: 200, seed: 0 },
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
  const realRng = new Rng(hashSeed("synthetic-real"));
  const reference = {
    promptId,
    features: { dim: FEATURE_DIM, data: gaussianRows(realRng, promptId.length, 0, 1) },
    floor: { promptId, features: { dim: FEATURE_DIM, data: gaussianRows(realRng, promptId.length, 0, 1) } },
  };
  const observations = CELLS.map((c, i) => ({
    id: fmtId(c, i),
    obs: syntheticObservations(c, promptId, fmtId(c, i)),
  }));
  // The records' metrics are the observations' point values, as computeMetrics would have written them.
  const point = runStats({ cells: observations, reference, b: 1 });
  const keys = [
    "fd",
    "kid",
    "precision",
    "recall",
    "is",
    "clip_score",
    "clip_score_torchmetrics",
    "accuracy",
    "diversity_clip",
  ];
  CELLS.forEach((c, i) => {
    const cellId = fmtId(c, i);
    const cellDir = join(dir, "cells", cellId);
    mkdirSync(cellDir, { recursive: true });
    const s = c.scale;
    const st = point.cells[i]!.stats;
    // A metric the observations lack (diversity of clip at s = 0) is JSON null, as the runner writes NaN.
    const metrics: Record<string, number | null> = Object.fromEntries(
      keys.map((k) => [k, st[k]?.value ?? null]),
    );
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
    writeCellObservations(cellDir, observations[i]!.obs, `synthetic ${FEATURE_DIM}-d`);
    writeFileSync(join(cellDir, "record.json"), JSON.stringify(record, null, 2));
    records.push(record);
  });
  // A cell whose sampling was interrupted: its folder exists, its record does not.
  mkdirSync(join(dir, "cells", "99-cfg-s7-n50"), { recursive: true });
  mkdirSync(join(dir, "real"), { recursive: true });
  writeReferenceObservations(join(dir, "real"), reference, `synthetic ${FEATURE_DIM}-d`);
  writeFileSync(
    join(dir, "real", "info.json"),
    JSON.stringify({ source: "world renders", n: 1000, seed: 7, features: "eval-clip" }, null, 2),
  );
  const real = gridImage(base, size, 2, 1, 1);
  writePng(join(dir, "real", "grid.png"), real.data, real.width, real.height);
  return records;
}
