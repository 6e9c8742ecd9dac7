// `npm start`: the main job on the embedded default. Until the zoo's models and the sweep runner land (issues
// 3–5), it exercises what exists for real: the captioned world with its oracle, and the diffusion core against
// the official code's reference outputs when a golden directory is present.
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { defaultGoldenDir } from "../core/paths.ts";
import { formatAccuracyReport, oracleAccuracyReport } from "../data/oracle.ts";
import { writeGrid } from "../data/png.ts";
import { Rng } from "../data/rng.ts";
import { caption, render, sampleScene } from "../data/world.ts";
import { formatRows, verifyReference } from "../verify/index.ts";

export async function start(out = join("reports", "start")): Promise<void> {
  mkdirSync(out, { recursive: true });
  const rng = new Rng(0);
  const scenes = Array.from({ length: 32 }, () => sampleScene(rng, { twoObjectProb: 0.4 }));
  const captions = scenes.map((s) => caption(s, rng, 4));
  writeGrid(
    join(out, "world.png"),
    scenes.map((s) => render(s, 32)),
    32,
    8,
  );
  writeFileSync(join(out, "world-captions.txt"), `${captions.map((c, i) => `${i}: ${c}`).join("\n")}\n`);
  process.stdout.write(`world samples: ${join(out, "world.png")} (captions in world-captions.txt)\n`);
  const report = oracleAccuracyReport({ n: 200, seed: 7 });
  process.stdout.write(
    `\noracle accuracy on fresh renders (200 per suite):\n${formatAccuracyReport(report)}\n`,
  );
  const golden = defaultGoldenDir();
  if (existsSync(golden)) {
    // The quick sections; `guidance-lab verify-reference` runs them all (about 5 minutes here).
    const result = await verifyReference(golden, ["schedules", "unit", "glide_cfg", "clip"]);
    process.stdout.write(`\nreference check against ${golden}:\n${formatRows(result.rows)}`);
  } else {
    process.stdout.write(`\n(no golden directory at ${golden}: reference check skipped)\n`);
  }
}
