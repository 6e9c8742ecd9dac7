// The explorer's agreement with `guidance-lab sample --runtime onnx` (docs/explorer.md): for six strategies, 4
// images × 25 steps, the browser's images (headless Chromium, file://) against sampleGuided on onnxruntime-node in
// this process (the CLI's path), images in [0, 1]. Run: npx tsx experiments/explorer/agreement.ts
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initEngine, tf } from "../../src/core/engine.ts";
import { seededNoise } from "../../src/core/samplers.ts";
import { loadPlaywright, openExplorer } from "../../src/explore/browser.ts";
import { writeExplorer } from "../../src/explore/build.ts";
import { readImages, respacingFor, sampleGuided, seededXT } from "../../src/pipelines/sampling.ts";
import { buildStrategy } from "../../src/strategies/registry.ts";
import { loadZoo } from "../../src/zoo/zoo.ts";

await initEngine("wasm", { quiet: true });
const pw = await loadPlaywright();
if (typeof pw === "string") throw new Error(pw);
const dir = mkdtempSync(join(tmpdir(), "gl-explorer-agreement-"));
await writeExplorer(dir);
const page = await openExplorer(pw, dir, "autorun=0");
const zoo = loadZoo({}, undefined, "onnx");
const prompt = "a red circle";
const n = 4;
const steps = 25;
const cases = [
  [{ kind: "cfg", scale: 3 }, "ddpm", 0],
  [{ kind: "cfg", scale: 3 }, "ddpm", 1],
  [{ kind: "cfg-rescale", scale: 3, phi: 0.7 }, "ddpm", 2],
  [{ kind: "apg", scale: 3, eta: 0, normThreshold: 0, momentum: -0.5 }, "ddim", 3],
  [{ kind: "autoguidance", scale: 2 }, "ddim", 4],
  [{ kind: "dynamic-threshold", percentile: 0.995, base: { kind: "cfg", scale: 6 } }, "ddpm", 5],
] as const;
process.stdout.write(
  "| strategy | sampler, steps, seed | images | largest difference | mean |\n| --- | --- | --- | --- | --- |\n",
);
try {
  for (const [strategy, sampler, seed] of cases) {
    const r = await page.run({ n, steps, strategy, sampler, prompt, seed, suite: "" });
    const diffusion = zoo.diffusion(respacingFor(sampler, steps));
    const g = buildStrategy(strategy, { ...zoo.models, diffusion }).bind(Array(n).fill(prompt));
    const xT = seededXT(seed, n, zoo.imageSize);
    const { sample } = sampleGuided(diffusion, g, xT, { sampler, noise: seededNoise(seed) });
    const want = await readImages(sample);
    tf.dispose([sample, xT]);
    g.dispose();
    let max = 0;
    let sum = 0;
    let count = 0;
    for (const [i, img] of want.entries()) {
      for (const [j, v] of img.entries()) {
        const d = Math.abs(v - r.images[i]![j]!);
        max = Math.max(max, d);
        sum += d;
        count++;
      }
    }
    process.stdout.write(
      `| \`${JSON.stringify(strategy)}\` | ${sampler}, ${steps}, ${seed} | ${n} | ${max.toExponential(2)} | ${(sum / count).toExponential(2)} |\n`,
    );
  }
  if (page.errors.length) throw new Error(page.errors.join("; "));
} finally {
  zoo.dispose();
  await page.close();
  rmSync(dir, { recursive: true, force: true });
}
