// What every pipeline shares: a UNet whose spatial inputs (low-res image, inpainting image and mask) are fixed for
// the run, known-region replacement for inpainting and iterative editing, and one sampling loop over the core
// samplers' single steps that any strategy binding (from the registry) drives. The loop is the zoo's too: a zoo
// `sample` run with a mask passes its binding here to edit a previous output.
import {
  type ScheduleName as BetaScheduleName,
  createDiffusion,
  type GaussianDiffusion,
  spaceTimesteps,
} from "../core/diffusion.ts";
import type { Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import {
  checkSchedule,
  SAMPLER_NAMES,
  type SampleOptions,
  type SampleResult,
  type SamplerName,
  type ScheduleName,
  sample,
  sampleInterruptible,
  samplerDef,
  seededNoise,
} from "../core/samplers.ts";
import type { NoiseSource } from "../core/types.ts";
import { unetModel } from "../nets/denoiser.ts";
import type { Conditioning, UNet } from "../nets/unet.ts";
import { buildStrategy, checkStrategySampler } from "../strategies/registry.ts";
import { tidyPred } from "../strategies/shared.ts";
import {
  type GuidanceModels,
  type GuidedSampling,
  hooksOf,
  type ModelFn,
  nfe,
  type Strategy,
} from "../strategies/strategy.ts";

/** Spatial conditioning fixed for a whole run, one row per sample (or one row for all). */
export interface SpatialInputs {
  lowRes?: Tensor4D;
  inpaintImage?: Tensor4D;
  inpaintMask?: Tensor4D;
}

/**
 * Strategies batch several conditionings per forward ([cond; uncond], negatives, composable terms) by repeating x
 * along the batch, and concatCond only carries text and labels; so the spatial inputs are tiled here to whatever
 * multiple of the sample batch the strategy sends.
 */
function tileRows(t: Tensor4D, n: number, what: string): Tensor4D {
  const b = t.shape[0];
  if (b === n) return t;
  if (n % b !== 0) throw new Error(`${what}: ${b} row(s) do not tile a model batch of ${n}`);
  return tf.concat(Array<Tensor4D>(n / b).fill(t)) as Tensor4D;
}

/**
 * A UNet as a ModelFn with its spatial inputs bound. Inputs the config does not use are dropped, so a plain text
 * model can run an inpainting pipeline with known-region replacement alone. `base` is the UNet's forward on the
 * chosen runtime (default TensorFlow.js; onnx/runtime.ts denoiserOn for ONNX Runtime).
 */
export function spatialModel(
  unet: UNet,
  spatial: SpatialInputs = {},
  base: ModelFn = unetModel(unet),
): ModelFn {
  const { superRes, inpaint } = unet.config;
  if (superRes && !spatial.lowRes) throw new Error("super-resolution model: the pipeline needs `lowRes`");
  return (x, t, cond) =>
    tidyPred(() => {
      const n = x.shape[0];
      const extra: Conditioning = {};
      if (superRes && spatial.lowRes) extra.lowRes = tileRows(spatial.lowRes, n, "lowRes");
      if (inpaint && spatial.inpaintImage && spatial.inpaintMask) {
        extra.inpaintImage = tileRows(spatial.inpaintImage, n, "inpaintImage");
        extra.inpaintMask = tileRows(spatial.inpaintMask, n, "inpaintMask");
      }
      return base(x, t, { ...cond, ...extra });
    });
}

export type { KnownRegion } from "../core/samplers.ts";
export { knownRegionDenoisedFn } from "../core/samplers.ts";

/** The samplers sampleGuided runs (the explorer's list derives from it): the registry's. */
export const LOOP_SAMPLERS = SAMPLER_NAMES;
export type LoopSampler = SamplerName;

/** What a run samples with: a registry sampler, its step count, schedule and η. */
export interface SamplerChoice {
  /** A registry name (src/core/samplers/registry.ts); default "ddpm". */
  sampler?: string;
  steps: number;
  schedule?: ScheduleName;
  eta?: number;
}

/**
 * The model table a sampler steps on, from the model's diffusion factory (`tableFor(respacing)`, e.g. zoo.diffusion)
 * over T training steps: the respaced tables of a VP sampler, the full table of a σ-space one. Refuses a schedule
 * the sampler does not take before anything is sampled.
 */
export function samplerDiffusion(
  choice: SamplerChoice,
  T: number,
  tableFor: (respacing: string | number[]) => GaussianDiffusion,
): GaussianDiffusion {
  const def = samplerDef(choice.sampler ?? "ddpm");
  const schedule = choice.schedule ?? "default";
  checkSchedule(def, schedule);
  return tableFor(def.respacing(choice.steps, schedule, T));
}

/**
 * The table and step count of a pipeline stage whose budget is a respacing spec: VP samplers step that respacing as
 * given (the notebooks' "100", "fast27", "ddim50"); σ-space samplers take as many steps as it keeps, choosing their
 * own σs on the model's full table.
 */
export function stageTable(
  sampler: string | undefined,
  respacing: string,
  T: number,
  tableFor: (respacing: string | number[]) => GaussianDiffusion,
): { diffusion: GaussianDiffusion; steps: number } {
  const def = samplerDef(sampler ?? "ddpm");
  const steps = spaceTimesteps(T, respacing).length;
  return { diffusion: tableFor(def.space === "vp" ? respacing : ""), steps };
}

/** The loop's options less the hooks, which come from the binding. */
export type LoopOptions = Omit<SampleOptions, "condFn" | "denoisedFn" | "clipDenoised" | "calls">;

export type LoopResult = SampleResult;

/**
 * A strategy binding through the one reverse loop (core/samplers/loop.ts): its denoiser and hooks, and its model
 * calls counted per network evaluation. xT is not disposed and the sample is the caller's.
 */
export function sampleGuided(
  diffusion: GaussianDiffusion,
  binding: GuidedSampling,
  xT: Tensor4D,
  opts: LoopOptions = {},
): LoopResult {
  return sample(diffusion, binding.denoise, xT, guidedOptions(binding, opts));
}

/** The loop's options for a binding: its hooks, and its model calls counted per network evaluation. */
function guidedOptions(binding: GuidedSampling, opts: LoopOptions): SampleOptions {
  return { ...hooksOf(binding), calls: (step) => nfe(binding.calls(step)), ...opts };
}

/** Wall time and network evaluations of one batch. */
export interface BatchCost {
  images: number;
  /** Network evaluations per sample. */
  nfe: number;
  seconds: number;
}

export interface BatchPlan<S> {
  items: readonly S[];
  batchSize: number;
  prompt(item: S): string;
  /** x_T of a batch starting at item `from`. */
  xT(batch: readonly S[], from: number): Tensor4D;
  /** Per-step noise of that batch. */
  noise(batch: readonly S[], from: number): NoiseSource;
  /** Awaited before each batch; may throw to abandon the run. */
  beforeBatch?(): void | Promise<void>;
  /** Awaited after each sampling step (one model call); may throw to abandon the run mid-batch. */
  betweenSteps?(): Promise<void>;
  onBatch?(done: number): void;
}

/**
 * The one batch-sampling loop (sweeps, model evaluation): each batch bound to its prompts, sampled from its own
 * x_T and noise, read back as HWC [0, 1] images. Awaiting the read-back lets a pending signal handler run between
 * batches.
 */
export async function sampleBatches<S>(
  strategy: Strategy,
  diffusion: GaussianDiffusion,
  plan: BatchPlan<S>,
  opts: LoopOptions = {},
): Promise<{ images: Float32Array[]; cost: BatchCost[] }> {
  const images: Float32Array[] = [];
  const cost: BatchCost[] = [];
  for (let from = 0; from < plan.items.length; from += plan.batchSize) {
    await plan.beforeBatch?.();
    const batch = plan.items.slice(from, from + plan.batchSize);
    const binding = strategy.bind(batch.map((s) => plan.prompt(s)));
    const xT = plan.xT(batch, from);
    const t0 = performance.now();
    let calls: number;
    try {
      const loopOpts = guidedOptions(binding, { ...opts, noise: plan.noise(batch, from) });
      const r = plan.betweenSteps
        ? await sampleInterruptible(diffusion, binding.denoise, xT, loopOpts, plan.betweenSteps)
        : sample(diffusion, binding.denoise, xT, loopOpts);
      calls = r.nfe;
      images.push(...(await readImages(r.sample)));
      r.sample.dispose();
    } finally {
      xT.dispose();
      binding.dispose();
    }
    cost.push({ images: batch.length, nfe: calls, seconds: (performance.now() - t0) / 1000 });
    plan.onBatch?.(images.length);
  }
  return { images, cost };
}

/**
 * The respacing a sampler takes for `steps` steps of a T-step model at its default schedule (the registry's:
 * "ddimN" for ddim, N evenly spaced steps for ddpm, the full table for σ-space samplers, which then need `steps`).
 */
export const respacingFor = (sampler: LoopSampler, steps: number, T = 1000): string | number[] =>
  samplerDef(sampler).respacing(steps, "default", T);

/**
 * x_T of `guidance-lab sample --seed`: n standard normal images from the pure-JS PRNG, so that a seed starts the
 * same trajectory on every backend and in the browser explorer (src/explore); the per-step noise is
 * seededNoise(seed).
 */
export const seededXT = (seed: number, n: number, size: number, channels = 3): Tensor4D =>
  seededNoise(`${seed}:x_T`)(0, [n, size, size, channels]);

/**
 * Samples in [-1, 1] read back once as HWC images in [0, 1] (the data pipeline's format), one array per image.
 * Async so that a pending signal handler can run between batches.
 */
export async function readImages(x: Tensor4D): Promise<Float32Array[]> {
  const pixels = tf.tidy(() => tf.clipByValue(tf.div(tf.add(x, 1), 2), 0, 1));
  const data = (await pixels.data()) as Float32Array;
  pixels.dispose();
  const per = data.length / x.shape[0];
  return Array.from({ length: x.shape[0] }, (_, i) => data.slice(i * per, (i + 1) * per));
}

/** A diffusion for a model: learned-range variance when the model outputs 2·C channels, else guided-diffusion's default fixed_large. */
export function diffusionFor(
  unet: UNet,
  schedule: BetaScheduleName | string,
  respacing: string | readonly number[],
  steps = 1000,
): GaussianDiffusion {
  const learned = unet.config.outChannels === 2 * unet.config.inChannels;
  return createDiffusion({
    schedule: schedule as BetaScheduleName,
    steps,
    respacing,
    modelVarType: learned ? "learned_range" : "fixed_large",
  });
}

export interface StageOptions extends LoopOptions {
  /** The model bag (model, encode and whatever the strategy needs). */
  models: GuidanceModels;
  /** A raw strategy config, validated by the registry. */
  strategy: unknown;
  prompts: readonly string[];
  diffusion: GaussianDiffusion;
  /** [H, W, C] of one sample. */
  shape: [number, number, number];
  seed: number | string;
  /** Initial noise scale (GLIDE's upsample_temp 0.997). */
  temperature?: number;
  /** Tag for the seeds and error messages ("base", "upsampler"). */
  stage: string;
}

/** One sampling stage: strategy built from the registry, bound to the prompts, seeded x_T, the loop. */
export function runStage(o: StageOptions): LoopResult {
  const strategy = buildStrategy(o.strategy, { ...o.models, diffusion: o.diffusion }, `${o.stage} strategy`);
  checkStrategySampler(strategy.config, o.sampler ?? "ddpm", o.eta, `${o.stage} sampler`);
  const binding = strategy.bind(o.prompts);
  const xT = tf.tidy(() => {
    const z = seededNoise(`${o.seed}:${o.stage}:x_T`)(0, [o.prompts.length, ...o.shape]);
    return o.temperature === undefined || o.temperature === 1 ? z : (tf.mul(z, o.temperature) as Tensor4D);
  });
  try {
    return sampleGuided(o.diffusion, binding, xT, {
      ...o,
      noise: o.noise ?? seededNoise(`${o.seed}:${o.stage}`),
    });
  } finally {
    xT.dispose();
    binding.dispose();
  }
}
