// What intervals cost: the paired prompt bootstrap (B = 1000) and KID over a quickstart-sized run (18 cells of 6
// prompts × 4 samples, 64-d evaluation features, 24 classifier classes, a real set and its floor set), set against
// the sampling time of a quickstart cell estimated from the sampling rows (the fastest "zoo cfg sampling" row:
// ms per DDPM step for the row's samples, scaled to the quickstart's 24 samples and its mean of 37.5 steps). The
// target is at most 10% of a sweep's wall time.

import { kernelInceptionDistance } from "../metrics/kid.ts";
import type { CellObservations } from "../metrics/observations.ts";
import { rows } from "../metrics/observations.ts";
import { runStats } from "../stats/run-stats.ts";
import { hashSeed, Rng } from "../util/rng.ts";
import type { Row } from "./engine.ts";

const CELLS = 18;
const PROMPTS = 6;
const PER_PROMPT = 4;
const DIM = 64;
const CLASSES = 24;

function gaussian(rng: Rng, n: number, shift: number): Float32Array {
  return Float32Array.from({ length: n * DIM }, () => shift + rng.normal());
}

function cell(i: number, promptId: string[]): CellObservations {
  const rng = new Rng(hashSeed("bench-stats", i));
  const n = promptId.length;
  const probs = new Float32Array(n * CLASSES);
  for (let k = 0; k < n; k++) {
    let s = 0;
    for (let j = 0; j < CLASSES; j++) s += probs[k * CLASSES + j] = Math.exp(rng.normal());
    for (let j = 0; j < CLASSES; j++) probs[k * CLASSES + j]! /= s;
  }
  const ids = [...new Set(promptId)];
  return {
    promptId,
    suite: promptId.map(() => "colour"),
    features: { dim: DIM, data: gaussian(rng, n, 0.01 * i) },
    clipScore: promptId.map(() => 25 + rng.normal()),
    clipScoreGuidance: promptId.map(() => 25 + rng.normal()),
    classProbs: { dim: CLASSES, data: probs },
    correct: promptId.map(() => rng.next() < 0.8),
    failed: promptId.map(() => []),
    diversityClip: Object.fromEntries(ids.map((id) => [id, 0.3 + 0.01 * rng.normal()])),
    diversityPixel: Object.fromEntries(ids.map((id) => [id, 0.2 + 0.01 * rng.normal()])),
  };
}

/**
 * A synthetic run's runStats input: `cells` cells of `prompts` × `perPrompt` samples (64-d features, 24 classes,
 * accuracies, CLIP scores, diversities), a real set and its floor set. The bench's run is 18 × 6 × 4;
 * tools/stats/bootstrap_threads.ts times the replicate loop on a league-sized one.
 */
export function syntheticStatsInput(cells: number, prompts: number, perPrompt: number) {
  const promptId = Array.from(
    { length: prompts * perPrompt },
    (_, i) => `colour/${Math.floor(i / perPrompt)}`,
  );
  const rng = new Rng(7);
  const reference = {
    promptId,
    features: { dim: DIM, data: gaussian(rng, promptId.length, 0) },
    floor: { promptId, features: { dim: DIM, data: gaussian(rng, promptId.length, 0) } },
  };
  return {
    cells: Array.from({ length: cells }, (_, i) => ({ id: `c${i}`, obs: cell(i, promptId) })),
    reference,
  };
}

/**
 * One row; `sampling` are the sampling rows (for the quickstart cell's sampling time), `rowSamples` the samples
 * each of their steps drew (16; 2 in --quick, whose tiny sizes make the share a smoke test only).
 */
export function benchStats(sampling: readonly Row[], opts: { b?: number; rowSamples?: number } = {}): Row[] {
  const b = opts.b ?? 1000;
  const rowSamples = opts.rowSamples ?? 16;
  const { cells, reference } = syntheticStatsInput(CELLS, PROMPTS, PER_PROMPT);
  const t0 = performance.now();
  runStats({ cells, reference, b });
  // The registry's KID (the record's value) on every cell, beside the bootstrap's.
  const real = rows(reference.features);
  for (const c of cells) kernelInceptionDistance(rows(c.obs.features!), real);
  const perCellMs = (performance.now() - t0) / CELLS;
  const cfg = sampling
    .filter((r) => r.name === "zoo cfg sampling" && r.ms > 0)
    .sort((p, q) => p.ms - q.ms)[0];
  const cellSamplingMs = cfg ? cfg.ms * (24 / rowSamples) * 37.5 : Number.NaN;
  const share = (100 * perCellMs) / (perCellMs + cellSamplingMs);
  return [
    {
      name: "bootstrap + KID, quickstart-sized run",
      backend: cfg ? cfg.backend : "-",
      value: share,
      unit: "% of cell",
      ms: perCellMs,
      detail: `B=${b}, ${CELLS} cells × ${PROMPTS * PER_PROMPT} samples, ${DIM}-d; ms per cell vs ~${(cellSamplingMs / 1000).toFixed(1)} s sampling a quickstart cell (${cfg ? `${cfg.backend} cfg row` : "no sampling row"}); target ≤ 10%`,
    },
  ];
}
