// Paired comparison of two runs of the same prompts and seeds that differ in sampler and steps (e.g. the quickstart
// before and after its switch): every cell of NEW against the cell of OLD with the same strategy, parameters and
// scale at the same rank of step count (OLD's i-th smallest steps ↔ NEW's i-th). Cells of both runs start from the
// same x_T per sample (x_T derives from seed, prompt and sample index), so the differences are paired; the run
// folders are joined by links in OUT (cells of both, OLD's real-image features) and compared there exactly as
// `guidance-lab compare OUT --pairs …` would (95% CIs from the prompt bootstrap, Holm over all rows).
//
//   npx tsx experiments/sampler-nfe/compare-runs.ts OLD NEW OUT
import { cpSync, existsSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { initEngine } from "../../src/core/engine.ts";
import { compareRunFolder, formatCompare } from "../../src/report/compare.ts";
import { type CellRecord, readRun } from "../../src/report/run-folder.ts";

const [oldDir, newDir, out] = process.argv.slice(2).map((p) => resolve(p));
if (!oldDir || !newDir || !out) throw new Error("usage: compare-runs.ts OLD NEW OUT");
if (existsSync(out) && readdirSync(out).length) throw new Error(`${out} is not empty`);
await initEngine("cpu", { quiet: true });
const runs = [readRun(oldDir), readRun(newDir)] as const;
mkdirSync(join(out, "cells"), { recursive: true });
cpSync(join(oldDir, "config.json"), join(out, "config.json"));
if (existsSync(join(oldDir, "env.json"))) cpSync(join(oldDir, "env.json"), join(out, "env.json"));
symlinkSync(join(oldDir, "real"), join(out, "real"));
for (const run of runs)
  for (const c of run.cells)
    symlinkSync(join(run.dir, "cells", c.record.cellId), join(out, "cells", c.record.cellId));

const group = (r: CellRecord) => `${r.strategy}|${JSON.stringify(r.strategyParams)}|${r.scale}`;
const byGroup = (cells: readonly { record: CellRecord }[]) => {
  const m = new Map<string, CellRecord[]>();
  for (const { record } of cells) m.set(group(record), [...(m.get(group(record)) ?? []), record]);
  for (const list of m.values()) list.sort((a, b) => a.steps - b.steps);
  return m;
};
const [olds, news] = runs.map((r) => byGroup(r.cells));
const pairs: string[] = [];
for (const [g, list] of news!) {
  const before = olds!.get(g);
  if (!before || before.length !== list.length) throw new Error(`${g}: no matching cells in ${oldDir}`);
  for (const [i, r] of list.entries()) pairs.push(`${r.cellId}:${before[i]!.cellId}`);
}
const { result } = compareRunFolder(out, { pairs });
const text = formatCompare(result);
writeFileSync(join(out, "compare.txt"), text);
const resolvedRows = result.rows.filter((r) => r.resolved);
process.stdout.write(
  `${text}\n${pairs.length} pairs × metrics = ${result.rows.length} paired differences (new − old); resolved: ${resolvedRows.length}${resolvedRows.map((r) => `\n  ${r.a} vs ${r.b} ${r.metric} Δ ${r.delta.toPrecision(3)} [${r.lo.toPrecision(3)}, ${r.hi.toPrecision(3)}]`).join("")}\n`,
);
