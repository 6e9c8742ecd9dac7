// The explorer's bench row: the zoo denoiser sampled in headless Chromium from file:// (onnxruntime-web, wasm, one
// thread: a file:// page is never cross-origin isolated), 8 images × 25 DDPM steps under cfg s = 3, target ≤ 5 s;
// beside it the same settings through `guidance-lab sample`'s path on onnxruntime-node in this process, so that a
// loaded machine shows in both. Skips, saying why, without Chromium or the zoo's denoiser.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { tf } from "../core/engine.ts";
import { seededNoise } from "../core/samplers.ts";
import { loadPlaywright, openExplorer } from "../explore/browser.ts";
import { explorerMissing, writeExplorer } from "../explore/build.ts";
import { onnxAvailable } from "../onnx/runtime.ts";
import { readImages, respacingFor, sampleGuided, seededXT } from "../pipelines/sampling.ts";
import { buildStrategy } from "../strategies/registry.ts";
import { loadZoo } from "../zoo/zoo.ts";
import type { Row } from "./engine.ts";

/** The target for 8 images × 25 steps under cfg in the browser on this CPU. */
export const EXPLORER_TARGET_S = 5;

export async function benchExplorer(
  opts: { quick?: boolean } = {},
): Promise<{ rows: Row[]; skipped?: string }> {
  const pw = await loadPlaywright();
  if (typeof pw === "string") return { rows: [], skipped: pw };
  const missing = explorerMissing();
  if (missing) return { rows: [], skipped: missing };
  const n = opts.quick ? 2 : 8;
  const steps = opts.quick ? 3 : 25;
  const settings = { prompt: "a red circle", suite: "", sampler: "ddpm" as const, n, steps, seed: 0 };
  const strategy = { kind: "cfg", scale: 3 };
  const dir = mkdtempSync(join(tmpdir(), "gl-bench-explorer-"));
  const rows: Row[] = [];
  try {
    const files = await writeExplorer(dir);
    const page = await openExplorer(pw, dir, "autorun=0");
    try {
      // Warm-up: onnxruntime-web plans its kernels on the first run of a shape.
      await page.run({ ...settings, steps: 2, strategy });
      const r = await page.run({ ...settings, strategy });
      if (page.errors.length) throw new Error(`explorer bench: ${page.errors.join("; ")}`);
      rows.push({
        name: `explorer: ${n} images × ${steps} steps, cfg (browser)`,
        backend: "ort-web wasm ×1",
        value: n / (r.ms / 1000),
        unit: "img/s",
        ms: r.ms,
        detail: `headless Chromium, file://; forwards ${(r.stats.forwardMs / 1000).toFixed(2)} s (${r.stats.forwards} of batch ${2 * n}), replayed loop arithmetic ${((r.ms - r.stats.forwardMs) / 1000).toFixed(2)} s; target ≤ ${EXPLORER_TARGET_S} s; folder ${(files.total / 1e6).toFixed(2)} MB`,
      });
    } finally {
      await page.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (!(await onnxAvailable())) {
    const zoo = loadZoo({}, undefined, "onnx");
    try {
      const diffusion = zoo.diffusion(respacingFor("ddpm", steps));
      const g = buildStrategy(strategy, { ...zoo.models, diffusion }).bind(Array(n).fill(settings.prompt));
      const once = async () => {
        const xT = seededXT(0, n, zoo.imageSize);
        const t0 = performance.now();
        const { sample } = sampleGuided(diffusion, g, xT, { noise: seededNoise(0) });
        await readImages(sample);
        tf.dispose([sample, xT]);
        return performance.now() - t0;
      };
      await once();
      const ms = await once();
      g.dispose();
      rows.push({
        name: `sample --runtime onnx: ${n} images × ${steps} steps, cfg (Node)`,
        backend: "onnxruntime-node",
        value: n / (ms / 1000),
        unit: "img/s",
        ms,
        detail: "the same settings through the CLI's path in this process, all cores, for scale",
      });
    } finally {
      zoo.dispose();
    }
  }
  return { rows };
}
