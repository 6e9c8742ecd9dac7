// The report's replicate loop on one thread and on two (runStats's `threads`), on a synthetic run of league size by
// default: CELLS cells of 21 prompts × 4 samples, 64-d features and 24 classes with a real set and its floor set,
// B replicates. Prints both wall times and how many replicates differ (there should be none). Usage:
//   npx tsx tools/stats/bootstrap_threads.ts [CELLS=66] [B=1000]
import type { CellObservations } from "../../src/metrics/observations.ts";
import { runStats } from "../../src/stats/run-stats.ts";
import { hashSeed, Rng } from "../../src/util/rng.ts";

const CELLS = Number(process.argv[2] ?? 66);
const B = Number(process.argv[3] ?? 1000);
const DIM = 64;
const CLASSES = 24;
const promptId = Array.from({ length: 21 * 4 }, (_, i) => `colour/${Math.floor(i / 4)}`);
const gaussian = (rng: Rng, shift: number) =>
  Float32Array.from({ length: promptId.length * DIM }, () => shift + rng.normal());

function cell(i: number): CellObservations {
  const rng = new Rng(hashSeed("bootstrap-threads", i));
  const probs = new Float32Array(promptId.length * CLASSES);
  for (let k = 0; k < promptId.length; k++) {
    let s = 0;
    for (let j = 0; j < CLASSES; j++) s += probs[k * CLASSES + j] = Math.exp(rng.normal());
    for (let j = 0; j < CLASSES; j++) probs[k * CLASSES + j]! /= s;
  }
  return {
    promptId,
    features: { dim: DIM, data: gaussian(rng, 0.01 * i) },
    clipScore: promptId.map(() => 25 + rng.normal()),
    classProbs: { dim: CLASSES, data: probs },
    correct: promptId.map(() => rng.next() < 0.8),
  };
}

const rng = new Rng(7);
const input = {
  cells: Array.from({ length: CELLS }, (_, i) => ({ id: `c${i}`, obs: cell(i) })),
  reference: {
    promptId,
    features: { dim: DIM, data: gaussian(rng, 0) },
    floor: { promptId, features: { dim: DIM, data: gaussian(rng, 0) } },
  },
  b: B,
};
const timed = (threads: "off" | "force") => {
  const t0 = performance.now();
  const s = runStats({ ...input, threads });
  return { s, seconds: (performance.now() - t0) / 1000 };
};
const one = timed("off");
const two = timed("force");
let compared = 0;
let differing = 0;
one.s.cells.forEach((c, i) => {
  for (const [key, v] of Object.entries(c.reps)) {
    const w = two.s.cells[i]!.reps[key]!;
    for (let r = 0; r < v.length; r++, compared++) if (!Object.is(v[r], w[r])) differing++;
  }
});
process.stdout.write(
  `${CELLS} cells, B = ${B}: one thread ${one.seconds.toFixed(1)} s, two ${two.seconds.toFixed(1)} s; ` +
    `${compared} replicates compared, ${differing} differing\n`,
);
