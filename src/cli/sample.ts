// `guidance-lab sample`: one strategy on one prompt with a zoo model; writes PNGs and reports NFE and wall time.
import { mkdirSync, readFileSync } from "node:fs";
import { extname, join } from "node:path";
import { parse as parseYaml } from "yaml";
import { type Tensor4D, tf } from "../core/engine.ts";
import { sampleDdim, sampleDdpm, seededNoise } from "../core/samplers.ts";
import type { StepInfo } from "../core/types.ts";
import { writeGrid, writePng } from "../data/png.ts";
import { loadZoo } from "../models/zoo.ts";
import { buildStrategy } from "../strategies/registry.ts";
import { hooksOf, nfe } from "../strategies/strategy.ts";

export interface SampleArgs {
  model: string;
  prompt: string;
  strategy: string;
  scale?: number;
  strategyConfig?: string;
  steps: number;
  sampler: "ddpm" | "ddim";
  eta: number;
  n: number;
  seed: number;
  out: string;
}

function strategyFromArgs(a: SampleArgs): { raw: unknown; source: string } {
  if (!a.strategyConfig) {
    return {
      raw: { kind: a.strategy, ...(a.scale !== undefined ? { scale: a.scale } : {}) },
      source: "--strategy",
    };
  }
  let text: string;
  try {
    text = readFileSync(a.strategyConfig, "utf8");
  } catch {
    throw new Error(`--strategy-config ${a.strategyConfig}: file not found`);
  }
  try {
    const raw = extname(a.strategyConfig) === ".json" ? JSON.parse(text) : parseYaml(text);
    return { raw, source: a.strategyConfig };
  } catch (e) {
    throw new Error(`${a.strategyConfig}: not valid YAML/JSON: ${(e as Error).message.split("\n")[0]}`);
  }
}

export async function runSample(a: SampleArgs): Promise<void> {
  const zoo = loadZoo({ denoiser: a.model });
  try {
    const respacing = a.sampler === "ddim" ? `ddim${a.steps}` : String(a.steps);
    const diffusion = zoo.diffusion(respacing);
    const { raw, source } = strategyFromArgs(a);
    const strategy = buildStrategy(raw, { ...zoo.models, diffusion }, source);
    const g = strategy.bind(Array.from({ length: a.n }, () => a.prompt));
    const s = zoo.imageSize;
    const xT = seededNoise(`${a.seed}:x_T`)(0, [a.n, s, s, 3]);
    let calls = 0;
    const t0 = performance.now();
    const opts = {
      ...hooksOf(g),
      noise: seededNoise(a.seed),
      onStep: (info: StepInfo & { total: number }) => {
        calls += nfe(g.calls(info));
        process.stderr.write(`\r[sample] step ${info.k + 1}/${info.total}`);
      },
    };
    const x0: Tensor4D =
      a.sampler === "ddim"
        ? sampleDdim(diffusion, g.denoise, xT, { ...opts, eta: a.eta })
        : sampleDdpm(diffusion, g.denoise, xT, opts);
    const pixels = tf.tidy(() => tf.clipByValue(tf.div(tf.add(x0, 1), 2), 0, 1));
    const data = (await pixels.data()) as Float32Array;
    const seconds = (performance.now() - t0) / 1000;
    tf.dispose([x0, pixels, xT]);
    g.dispose();
    mkdirSync(a.out, { recursive: true });
    const per = s * s * 3;
    const images = Array.from({ length: a.n }, (_, i) => data.slice(i * per, (i + 1) * per));
    for (const [i, img] of images.entries())
      writePng(join(a.out, `sample-${String(i).padStart(3, "0")}.png`), img, s);
    writeGrid(join(a.out, "grid.png"), images, s, Math.min(a.n, 8));
    process.stderr.write("\n");
    process.stdout.write(
      `${a.n} image(s) of "${a.prompt}" with ${JSON.stringify(raw)}: ${a.steps} ${a.sampler} steps, NFE ${calls} per image (${(calls / a.steps).toFixed(2)} per step), ${seconds.toFixed(1)} s (${(seconds / a.n).toFixed(2)} s per image) → ${a.out}\n`,
    );
  } finally {
    zoo.dispose();
  }
}
