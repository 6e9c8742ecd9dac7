// Joins run folders of the same prompts and seeds (cells differing in sampler and steps, from separate configs) into
// one folder of links, so that `guidance-lab report` and `guidance-lab compare` see them together. Cells of such runs
// start from the same x_T per sample (x_T derives from seed, prompt and sample index), so their differences are
// paired. OUT gets the first run's config.json and env.json, a link to its real-image features, and a link to every
// finished cell of every run (cell ids name sampler and steps; a cell in two runs is linked once if its files are
// identical in both, else refused).
//
//   npx tsx experiments/sampler-nfe/join-runs.ts OUT RUN...
//     then: npx guidance-lab report OUT; npx guidance-lab compare OUT --pairs A:B ...
//   npx tsx experiments/sampler-nfe/join-runs.ts --by-rank OUT OLD NEW
//     also compares every cell of NEW with the cell of OLD of the same strategy, parameters and scale at the same
//     rank of step count (OLD's i-th smallest ↔ NEW's i-th): the quickstart before and after its sampler switch.
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { initEngine } from "../../src/core/engine.ts";
import { compareRunFolder, formatCompare } from "../../src/report/compare.ts";
import { type CellRecord, type RunData, readRun } from "../../src/report/run-folder.ts";

const args = process.argv.slice(2);
const byRank = args[0] === "--by-rank";
const [out, ...dirs] = (byRank ? args.slice(1) : args).map((p) => resolve(p));
if (!out || dirs.length < (byRank ? 2 : 1) || (byRank && dirs.length !== 2))
  throw new Error("usage: join-runs.ts OUT RUN... | join-runs.ts --by-rank OUT OLD NEW");
if (existsSync(out) && readdirSync(out).length) throw new Error(`${out} is not empty`);
await initEngine("cpu", { quiet: true });
const runs: RunData[] = dirs.map((d) => readRun(d));
const first = dirs[0]!;
mkdirSync(join(out, "cells"), { recursive: true });
cpSync(join(first, "config.json"), join(out, "config.json"));
if (existsSync(join(first, "env.json"))) cpSync(join(first, "env.json"), join(out, "env.json"));
symlinkSync(join(first, "real"), join(out, "real"));
// A cell id names strategy, scale, steps and sampler, so two runs share one only when both sampled the same cell
// (the quickstart at steps [10, 25] and at [25, 50] share the 25-step cells). Such a cell is linked once, and only
// when its files (all but record.json's timings) are byte for byte the same in both runs; anything else is refused.
const seen = new Map<string, string>();
// Everything but record.json (which holds timings): observations, features, class probabilities and the grid.
// Returns the first file that differs, or undefined when the cell is the same in both runs.
const cellDifference = (a: string, b: string, id: string): string | undefined => {
  const files = (dir: string) =>
    readdirSync(join(dir, "cells", id))
      .filter((f) => f !== "record.json")
      .sort();
  const fa = files(a);
  const fb = files(b);
  if (JSON.stringify(fa) !== JSON.stringify(fb)) return `files ${fa.join(", ")} vs ${fb.join(", ")}`;
  return fa.find((f) => !readFileSync(join(a, "cells", id, f)).equals(readFileSync(join(b, "cells", id, f))));
};
let shared = 0;
for (const run of runs)
  for (const c of run.cells) {
    const id = c.record.cellId;
    const firstDir = seen.get(id);
    if (firstDir !== undefined) {
      const differs = cellDifference(firstDir, run.dir, id);
      if (differs)
        throw new Error(
          `cell ${id} is in ${firstDir} and ${run.dir} with different contents (${differs}); only identical cells can be joined`,
        );
      shared++;
      continue;
    }
    seen.set(id, run.dir);
    symlinkSync(join(run.dir, "cells", id), join(out, "cells", id));
  }
process.stdout.write(
  `${out}: ${seen.size} cells from ${runs.length} runs${shared ? ` (${shared} sampled identically in two runs, linked once)` : ""}\n`,
);

if (byRank) {
  const group = (r: CellRecord) => `${r.strategy}|${JSON.stringify(r.strategyParams)}|${r.scale}`;
  const byGroup = (cells: readonly { record: CellRecord }[]) => {
    const m = new Map<string, CellRecord[]>();
    for (const { record } of cells) m.set(group(record), [...(m.get(group(record)) ?? []), record]);
    for (const list of m.values()) list.sort((a, b) => a.steps - b.steps);
    return m;
  };
  const [olds, news] = [byGroup(runs[0]!.cells), byGroup(runs[1]!.cells)];
  const pairs: string[] = [];
  for (const [g, list] of news) {
    const before = olds.get(g);
    if (!before || before.length !== list.length) throw new Error(`${g}: no matching cells in ${dirs[0]}`);
    for (const [i, r] of list.entries()) pairs.push(`${r.cellId}:${before[i]!.cellId}`);
  }
  const { result } = compareRunFolder(out, { pairs });
  const text = formatCompare(result);
  writeFileSync(join(out, "compare.txt"), text);
  const resolvedRows = result.rows.filter((r) => r.resolved);
  process.stdout.write(
    `${text}\n${pairs.length} pairs, ${result.rows.length} paired differences (new − old); resolved: ${resolvedRows.length}${resolvedRows.map((r) => `\n  ${r.a} vs ${r.b} ${r.metric} Δ ${r.delta.toPrecision(3)} [${r.lo.toPrecision(3)}, ${r.hi.toPrecision(3)}]`).join("")}\n`,
  );
}
