// What every pipeline shares: a UNet whose spatial inputs (low-res image, inpainting image and mask) are fixed for
// the run, known-region replacement for inpainting and iterative editing, and one sampling loop over the core
// samplers' single steps that any strategy binding (from the registry) drives. The loop is the zoo's too: a zoo
// `sample` run with a mask passes its binding here to edit a previous output.
import "../core/ops.ts";
import { createDiffusion, type GaussianDiffusion, type ScheduleName } from "../core/diffusion.ts";
import type { Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import { ddimStep, ddpmStep, seededNoise } from "../core/samplers.ts";
import type { DenoisedFn, NoiseSource, StepInfo } from "../core/types.ts";
import type { Conditioning, UNet } from "../models/unet.ts";
import { buildStrategy } from "../strategies/registry.ts";
import { chainDenoisedFns, tidyPred } from "../strategies/shared.ts";
import {
  type GuidanceModels,
  type GuidedSampling,
  hooksOf,
  type ModelFn,
  nfe,
  unetModel,
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

/** Pixels to keep: x ∈ [-1, 1] NHWC and mask [B or 1, H, W, 1] with 1 = known. */
export interface KnownRegion {
  image: Tensor4D;
  mask: Tensor4D;
  /**
   * "x0" (default): GLIDE's inpaint notebook, whose denoised_fn overwrites the predicted x0's known pixels before
   * the posterior mean. "xt": after every step the known pixels become q_sample(image, t_prev) (RePaint-style
   * replacement without resampling), the clean image after the last step.
   */
  mode?: "x0" | "xt";
}

/** x0·(1 − m) + image·m, the official inpainting denoised_fn. */
export function knownRegionDenoisedFn(known: KnownRegion): DenoisedFn {
  return (x0) =>
    tf.tidy(() => tf.add(tf.mul(x0, tf.sub(1, known.mask)), tf.mul(known.image, known.mask)) as Tensor4D);
}

/** x's known pixels replaced by the image noised to respaced index `index` (−1: the clean image). */
export function replaceKnown(
  diffusion: GaussianDiffusion,
  x: Tensor4D,
  known: KnownRegion,
  index: number,
  noise: Tensor4D | undefined,
): Tensor4D {
  return tf.tidy(() => {
    const image = tf.broadcastTo(known.image, x.shape) as Tensor4D;
    const target = index < 0 || !noise ? image : diffusion.qSample(image, index, noise);
    return tf.add(tf.mul(x, tf.sub(1, known.mask)), tf.mul(target, known.mask)) as Tensor4D;
  });
}

/** The samplers sampleGuided runs (the explorer's list derives from it). */
export const LOOP_SAMPLERS = ["ddpm", "ddim"] as const;
export type LoopSampler = (typeof LOOP_SAMPLERS)[number];

export interface LoopOptions {
  sampler?: LoopSampler;
  /** DDIM only. */
  eta?: number;
  /** Per-step sampler noise; default seededNoise(0). */
  noise?: NoiseSource;
  known?: KnownRegion;
  /** Noise of the "xt" replacement's q_sample; default seededNoise("known-region"). */
  knownNoise?: NoiseSource;
  onStep?: (info: StepInfo & { total: number }) => void;
}

export interface LoopResult {
  sample: Tensor4D;
  /** Network evaluations per sample over the whole loop (strategy's own count). */
  nfe: number;
}

/**
 * The reverse loop over the core samplers' steps with `binding`'s hooks. Without `known` it is sampleDdpm /
 * sampleDdim exactly; xT is not disposed and the sample is the caller's.
 */
export function sampleGuided(
  diffusion: GaussianDiffusion,
  binding: GuidedSampling,
  xT: Tensor4D,
  opts: LoopOptions = {},
): LoopResult {
  const hooks = hooksOf(binding);
  const known = opts.known;
  const mode = known?.mode ?? "x0";
  if (known) checkKnown(known, xT);
  const denoisedFn =
    known && mode === "x0"
      ? chainDenoisedFns(hooks.denoisedFn, knownRegionDenoisedFn(known))
      : hooks.denoisedFn;
  const stepOpts = {
    ...hooks,
    ...(denoisedFn ? { denoisedFn } : {}),
    noise: opts.noise ?? seededNoise(0),
  };
  const knownNoise = opts.knownNoise ?? seededNoise("known-region");
  const total = diffusion.numTimesteps;
  const replace = (x: Tensor4D, index: number, k: number): Tensor4D => {
    const noise = index >= 0 ? knownNoise(k, [...x.shape]) : undefined;
    const out = replaceKnown(diffusion, x, known!, index, noise);
    noise?.dispose();
    return out;
  };
  let x = known && mode === "xt" ? replace(xT, total - 1, 0) : tf.clone(xT);
  let calls = 0;
  for (let index = total - 1; index >= 0; index--) {
    const info = diffusion.stepInfo(index);
    opts.onStep?.({ ...info, total });
    calls += nfe(binding.calls(info));
    const { sample, predXstart } =
      opts.sampler === "ddim"
        ? ddimStep(diffusion, binding.denoise, x, index, { ...stepOpts, eta: opts.eta ?? 0 })
        : ddpmStep(diffusion, binding.denoise, x, index, stepOpts);
    predXstart.dispose();
    x.dispose();
    x = sample;
    if (known && mode === "xt") {
      const r = replace(x, index - 1, info.k + 1);
      x.dispose();
      x = r;
    }
  }
  return { sample: x, nfe: calls };
}

function checkKnown(known: KnownRegion, x: Tensor4D): void {
  const [b, h, w, c] = x.shape;
  const [mb, mh, mw, mc] = known.mask.shape;
  const [ib, ih, iw, ic] = known.image.shape;
  if (mh !== h || mw !== w || mc !== 1 || (mb !== 1 && mb !== b)) {
    throw new Error(`known region: mask must be [${b} or 1, ${h}, ${w}, 1], got [${known.mask.shape}]`);
  }
  if (ih !== h || iw !== w || ic !== c || (ib !== 1 && ib !== b)) {
    throw new Error(`known region: image must be [${b} or 1, ${h}, ${w}, ${c}], got [${known.image.shape}]`);
  }
}

/** The respacing a sampler takes for `steps` steps: DDIM's own spacing ("ddimN"), else N evenly spaced steps. */
export const respacingFor = (sampler: LoopSampler, steps: number): string =>
  sampler === "ddim" ? `ddim${steps}` : String(steps);

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
  schedule: ScheduleName | string,
  respacing: string,
  steps = 1000,
): GaussianDiffusion {
  const learned = unet.config.outChannels === 2 * unet.config.inChannels;
  return createDiffusion({
    schedule: schedule as ScheduleName,
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
