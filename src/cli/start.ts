// `npm start`: the main job on the embedded default: the quickstart sweep on the shipped zoo, ending with the path
// of its report page. When the models folder lacks some of the zoo (GUIDANCE_LAB_MODELS pointing elsewhere), it
// says which models are missing and exercises what exists for real: the captioned world with its oracle, and the
// core against the official reference outputs.
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { defaultGoldenDir, REPO_ROOT } from "../core/paths.ts";
import { formatAccuracyReport, oracleAccuracyReport } from "../data/oracle.ts";
import { writeGrid } from "../data/png.ts";
import { caption, render, sampleScene } from "../data/world.ts";
import { Rng } from "../util/rng.ts";
import { formatRows, verifyReference } from "../verify/index.ts";
import { modelsDir } from "../zoo/registry.ts";

const QUICKSTART = join(REPO_ROOT, "configs", "quickstart.yaml");
const ZOO_FOR_QUICKSTART = ["denoiser", "classifier", "noised-clip", "eval-clip"];

export async function start(out = join("reports", "start")): Promise<void> {
  const missing = ZOO_FOR_QUICKSTART.filter((n) => !existsSync(join(modelsDir(), n, "model.json")));
  if (missing.length === 0) {
    const { runSweepResumingOrSettingAside } = await import("../sweep/runner.ts");
    const r = await runSweepResumingOrSettingAside(QUICKSTART, join("reports", "quickstart"));
    if (!r.interrupted) process.stdout.write(`\nreport: ${r.htmlPath}\n`);
    return;
  }
  process.stdout.write(
    `The quickstart sweep needs the zoo models ${missing.join(", ")} which ${modelsDir()} lacks (the repository's models/ ships them; or train them: guidance-lab train <recipe>). Showing the world, the oracle and the reference checks instead.\n\n`,
  );
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
