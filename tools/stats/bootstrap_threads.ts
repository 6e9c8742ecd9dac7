// The report's replicate loop on one thread and on two (runStats's `threads`), on the bench's synthetic run
// (src/bench/stats.ts syntheticStatsInput) at league size by default: CELLS cells of 21 prompts × 4 samples, B
// replicates. Prints both wall times and how many replicates differ (there should be none). Usage:
//   npx tsx tools/stats/bootstrap_threads.ts [CELLS=66] [B=1000]
import { syntheticStatsInput } from "../../src/bench/stats.ts";
import { runStats } from "../../src/stats/run-stats.ts";

const CELLS = Number(process.argv[2] ?? 66);
const B = Number(process.argv[3] ?? 1000);
const input = { ...syntheticStatsInput(CELLS, 21, 4), b: B };
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
