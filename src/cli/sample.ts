// `guidance-lab sample`: one strategy on one prompt with a zoo model; writes PNGs and reports NFE and wall time.
import { mkdirSync, readFileSync } from "node:fs";
import { extname, join } from "node:path";
import { parse as parseYaml } from "yaml";
import { type Tensor4D, tf } from "../core/engine.ts";
import { checkSchedule, type ScheduleName, samplerDef, seededNoise } from "../core/samplers.ts";
import { readPng, writeGrid, writePng } from "../data/png.ts";
import { type RuntimeChoice, resolveRuntime } from "../onnx/choice.ts";
import { readImages, sampleGuided, samplerDiffusion, seededXT } from "../pipelines/sampling.ts";
import { buildStrategy, checkStrategySampler, parseStrategyConfig } from "../strategies/registry.ts";
import { checkGuides, refuseEvalClipGuides } from "../sweep/guides.ts";
import { modelsDir } from "../zoo/registry.ts";
import { DEFAULT_ZOO, defaultGuideThreads, loadZoo } from "../zoo/zoo.ts";

export interface SampleArgs {
  model: string;
  prompt: string;
  strategy: string;
  scale?: number;
  strategyConfig?: string;
  steps: number;
  sampler: string;
  schedule?: ScheduleName;
  eta?: number;
  n: number;
  seed: number;
  out: string;
  /** Inpainting / iterative editing: the image to keep where the mask is white (PNG of the model's size). */
  initImage?: string;
  /** PNG of the model's size: white = keep the init image, black = generate. */
  mask?: string;
  /** Known-region replacement on the predicted x0 (GLIDE's inpaint notebook) or on x_t after each step. */
  replace?: "x0" | "xt";
  /** Runtime of the denoisers' forwards; default auto (ONNX Runtime when it loads). */
  runtime?: RuntimeChoice;
  /** The guide by zoo name (the strategy's `model`), e.g. noised-clip-500. */
  guideModel?: string;
}

function readImageTensor(path: string, flag: string, size: number, channels: 1 | 3): Tensor4D {
  let img: ReturnType<typeof readPng>;
  try {
    img = readPng(path);
  } catch (e) {
    throw new Error(`${flag} ${path}: cannot read PNG (${(e as Error).message.split("\n")[0]})`);
  }
  if (img.width !== size || img.height !== size) {
    throw new Error(
      `${flag} ${path}: image is ${img.width}×${img.height}, the model makes ${size}×${size} images`,
    );
  }
  const n = size * size;
  if (channels === 1) {
    const m = new Float32Array(n);
    for (let i = 0; i < n; i++) m[i] = img.data[i * 3]! > 0.5 ? 1 : 0;
    return tf.tensor4d(m, [1, size, size, 1]);
  }
  return tf.tidy(() => tf.sub(tf.mul(tf.tensor4d(img.data, [1, size, size, 3]), 2), 1) as Tensor4D);
}

/** The strategy of --strategy/--scale, or of a --strategy-config file (YAML or JSON). */
export function strategyFromArgs(a: Pick<SampleArgs, "strategy" | "scale" | "strategyConfig">): {
  raw: unknown;
  source: string;
} {
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

/** The strategy with --guide-model as its `model`, checked (exists, fits the kind, not the evaluation CLIP). */
export function withGuideModel(raw: unknown, source: string, guideModel: string | undefined): unknown {
  let out = raw;
  if (guideModel !== undefined) {
    if (!raw || typeof raw !== "object" || Array.isArray(raw)) return raw; // the registry names the problem
    const given = (raw as { model?: unknown }).model;
    if (given !== undefined && given !== guideModel) {
      throw new Error(`--guide-model ${guideModel}: ${source} already names model '${String(given)}'`);
    }
    out = { ...raw, model: guideModel };
  }
  refuseEvalClipGuides([out], DEFAULT_ZOO.evalClip, "--guide-model");
  checkGuides([out], DEFAULT_ZOO.evalClip, modelsDir(), guideModel !== undefined ? "--guide-model" : source);
  return out;
}

/**
 * The checks that need no model: a schedule the sampler does not take and a strategy not defined for the sampler
 * fail here, naming the flag.
 */
export function checkSamplerArgs(
  a: Pick<SampleArgs, "sampler" | "schedule" | "eta">,
  raw: unknown,
  source: string,
): void {
  try {
    checkSchedule(samplerDef(a.sampler), a.schedule ?? "default");
  } catch (e) {
    throw new Error(`--schedule: ${(e as Error).message}`);
  }
  checkStrategySampler(parseStrategyConfig(raw, source), a.sampler, a.eta, "--sampler");
}

/** The strategy of the arguments, checked against the sampler (checkSamplerArgs). */
export function checkedStrategy(
  a: Pick<SampleArgs, "strategy" | "scale" | "strategyConfig" | "sampler" | "schedule" | "eta">,
): { raw: unknown; source: string } {
  const { raw, source } = strategyFromArgs(a);
  checkSamplerArgs(a, raw, source);
  return { raw, source };
}

export async function runSample(a: SampleArgs): Promise<void> {
  const guided = strategyFromArgs(a);
  const raw = withGuideModel(guided.raw, guided.source, a.guideModel);
  const source = guided.source;
  // A schedule or strategy the sampler cannot serve fails before any model loads.
  checkSamplerArgs(a, raw, source);
  const zoo = loadZoo({ denoiser: a.model }, undefined, await resolveRuntime(a.runtime), {
    guideThreads: defaultGuideThreads(),
  });
  try {
    const T = zoo.info.config.diffusion.steps;
    if (!Number.isInteger(a.steps) || a.steps < 1 || a.steps > T)
      throw new Error(
        `--steps ${a.steps}: expected an integer from 1 to ${T} (the diffusion steps '${a.model}' was trained with)`,
      );
    const choice = {
      sampler: a.sampler,
      steps: a.steps,
      ...(a.schedule ? { schedule: a.schedule } : {}),
      ...(a.eta !== undefined ? { eta: a.eta } : {}),
    };
    const diffusion = samplerDiffusion(choice, zoo.diffusion("").numTimesteps, (r) => zoo.diffusion(r));
    const strategy = buildStrategy(raw, { ...zoo.models, diffusion }, source);
    const g = strategy.bind(Array.from({ length: a.n }, () => a.prompt));
    const s = zoo.imageSize;
    const xT = seededXT(a.seed, a.n, s);
    if ((a.initImage === undefined) !== (a.mask === undefined)) {
      throw new Error(
        "--init-image and --mask go together (inpainting keeps the init image where the mask is white)",
      );
    }
    const known =
      a.initImage && a.mask
        ? {
            image: readImageTensor(a.initImage, "--init-image", s, 3),
            mask: readImageTensor(a.mask, "--mask", s, 1),
            mode: a.replace ?? "x0",
          }
        : undefined;
    const t0 = performance.now();
    const { sample: x0, nfe: calls } = sampleGuided(diffusion, g, xT, {
      ...choice,
      noise: seededNoise(a.seed),
      ...(known ? { known } : {}),
      onStep: (info) => process.stderr.write(`\r[sample] step ${info.k + 1}/${info.total}`),
    });
    if (known) tf.dispose([known.image, known.mask]);
    const images = await readImages(x0);
    const seconds = (performance.now() - t0) / 1000;
    tf.dispose([x0, xT]);
    g.dispose();
    mkdirSync(a.out, { recursive: true });
    for (const [i, img] of images.entries())
      writePng(join(a.out, `sample-${String(i).padStart(3, "0")}.png`), img, s);
    writeGrid(join(a.out, "grid.png"), images, s, Math.min(a.n, 8));
    process.stderr.write("\n");
    process.stdout.write(
      `${a.n} image(s) of "${a.prompt}" with ${JSON.stringify(raw)}: ${a.steps} ${a.sampler} steps, NFE ${calls} per image, ${seconds.toFixed(1)} s (${(seconds / a.n).toFixed(2)} s per image) → ${a.out}\n`,
    );
  } finally {
    zoo.dispose();
  }
}
