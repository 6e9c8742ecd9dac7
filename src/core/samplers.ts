// Ancestral (DDPM) and DDIM sampling loops. They know nothing about guidance: a strategy hands them a Denoiser that
// is already guided, and gradient guidance arrives through `condFn`. The order inside a step follows the official
// code (model call, then noise, then the guidance gradient) so that recorded reference trajectories replay exactly.
import { hashSeed, Rng } from "../data/rng.ts";
import type { GaussianDiffusion, PMeanVariance } from "./diffusion.ts";
import type { Tensor4D } from "./engine.ts";
import { tf } from "./engine.ts";
import type { Denoiser, NoiseSource, SamplerHooks, StepInfo } from "./types.ts";

/** Host copies of one step's tensors, for golden checks and debugging. */
export interface RecordedStep extends StepInfo {
  shape: number[];
  xIn: Float32Array;
  mean: Float32Array;
  logVariance: Float32Array;
  predXstart: Float32Array;
  eps: Float32Array;
  sample: Float32Array;
}

export interface SampleOptions extends SamplerHooks {
  /** Defaults to seededNoise(0). */
  noise?: NoiseSource;
  /** When given, every step pushes a RecordedStep here (costly: copies five tensors to the host per step). */
  recordSteps?: RecordedStep[];
}

export interface DdimOptions extends SampleOptions {
  /** 0 = deterministic DDIM; 1 ≈ DDPM's variance (Song et al. 2021 eq. 16). */
  eta?: number;
}

export interface StepOutput {
  sample: Tensor4D;
  predXstart: Tensor4D;
}

/**
 * Deterministic standard normal noise from a pure-JS PRNG, so that a seed gives the same trajectory on every
 * backend. Each iteration k has its own stream, which makes the noise independent of how many draws other steps made.
 */
export function seededNoise(seed: number | string): NoiseSource {
  return (k, shape) => {
    const rng = new Rng(hashSeed(seed, "sampler-noise", k));
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = rng.normal();
    return tf.tensor4d(data, shape as [number, number, number, number]);
  };
}

function record(
  opts: SampleOptions,
  step: StepInfo,
  x: Tensor4D,
  out: PMeanVariance,
  sample: Tensor4D,
): void {
  opts.recordSteps?.push({
    ...step,
    shape: [...x.shape],
    xIn: x.dataSync() as Float32Array,
    mean: out.mean.dataSync() as Float32Array,
    logVariance: out.logVariance.dataSync() as Float32Array,
    predXstart: out.predXstart.dataSync() as Float32Array,
    eps: out.eps.dataSync() as Float32Array,
    sample: sample.dataSync() as Float32Array,
  });
}

function pmvFor(
  diffusion: GaussianDiffusion,
  denoise: Denoiser,
  x: Tensor4D,
  step: StepInfo,
  opts: SamplerHooks,
): PMeanVariance {
  const pred = denoise(x, step);
  const denoisedFn = opts.denoisedFn;
  return diffusion.pMeanVariance(pred, x, step.index, {
    clipDenoised: opts.clipDenoised ?? true,
    ...(denoisedFn ? { denoisedFn: (x0: Tensor4D) => denoisedFn(x0, step) } : {}),
  });
}

/**
 * One ancestral step x_t → x_{t-1} = μ + σ·z (Ho et al. 2020 Algorithm 2 with eq. 11's mean), with gradient guidance
 * on the mean (Dhariwal & Nichol 2021 Algorithm 1). No noise at index 0. The caller owns both outputs.
 */
export function ddpmStep(
  diffusion: GaussianDiffusion,
  denoise: Denoiser,
  x: Tensor4D,
  index: number,
  opts: SampleOptions = {},
): StepOutput {
  const step = diffusion.stepInfo(index);
  const noiseSource = opts.noise ?? seededNoise(0);
  return tf.tidy(() => {
    let out = pmvFor(diffusion, denoise, x, step, opts);
    const noise = index > 0 ? noiseSource(step.k, [...x.shape]) : undefined;
    if (opts.condFn) out = diffusion.conditionMean(out, x, step, opts.condFn);
    const sample = noise
      ? (tf.add(out.mean, tf.mul(tf.exp(tf.mul(0.5, out.logVariance)), noise)) as Tensor4D)
      : out.mean;
    if (opts.recordSteps) record(opts, step, x, out, sample);
    return { sample, predXstart: out.predXstart };
  });
}

/**
 * One DDIM step (Song et al. 2021 eq. 12): x_{t-1} = sqrt(ᾱ_prev)·x0 + sqrt(1 − ᾱ_prev − σ²)·ε + σ·z with
 * σ = η·sqrt((1−ᾱ_prev)/(1−ᾱ))·sqrt(1 − ᾱ/ᾱ_prev) (eq. 16); gradient guidance on the score (Dhariwal & Nichol 2021
 * Algorithm 2). ε is recomputed from the (clipped, guided) x0, as the reference does.
 */
export function ddimStep(
  diffusion: GaussianDiffusion,
  denoise: Denoiser,
  x: Tensor4D,
  index: number,
  opts: DdimOptions = {},
): StepOutput {
  const step = diffusion.stepInfo(index);
  const eta = opts.eta ?? 0;
  const noiseSource = opts.noise ?? seededNoise(0);
  return tf.tidy(() => {
    let out = pmvFor(diffusion, denoise, x, step, opts);
    if (opts.condFn) out = diffusion.conditionScore(out, x, step, opts.condFn);
    const eps = diffusion.predictEpsFromXstart(x, index, out.predXstart);
    // The reference forms these coefficients from float32 ᾱ in float32 arithmetic; fround mimics it.
    const f = Math.fround;
    const ab = f(diffusion.alphasCumprod[index]!);
    const abPrev = f(diffusion.alphasCumprodPrev[index]!);
    const sigma = f(
      f(f(eta) * f(Math.sqrt(f(f(1 - abPrev) / f(1 - ab))))) * f(Math.sqrt(f(1 - f(ab / abPrev)))),
    );
    const cEps = f(Math.sqrt(f(f(1 - abPrev) - f(sigma * sigma))));
    const meanPred = tf.add(tf.mul(out.predXstart, f(Math.sqrt(abPrev))), tf.mul(cEps, eps)) as Tensor4D;
    let sample = meanPred;
    if (index > 0 && sigma > 0) {
      const noise = noiseSource(step.k, [...x.shape]);
      sample = tf.add(meanPred, tf.mul(sigma, noise)) as Tensor4D;
    }
    if (opts.recordSteps) record(opts, step, x, { ...out, mean: meanPred, eps }, sample);
    return { sample, predXstart: out.predXstart };
  });
}

function loop(
  diffusion: GaussianDiffusion,
  xT: Tensor4D,
  opts: SamplerHooks,
  stepFn: (x: Tensor4D, index: number) => StepOutput,
): Tensor4D {
  const total = diffusion.numTimesteps;
  let x = xT;
  for (let index = total - 1; index >= 0; index--) {
    opts.onStep?.({ ...diffusion.stepInfo(index), total });
    const { sample, predXstart } = stepFn(x, index);
    predXstart.dispose();
    if (x !== xT) x.dispose();
    x = sample;
  }
  return x === xT ? tf.clone(xT) : x;
}

/** Full ancestral sampling from x_T (Ho et al. 2020 Algorithm 2). xT is not disposed; the result is the caller's. */
export function sampleDdpm(
  diffusion: GaussianDiffusion,
  denoise: Denoiser,
  xT: Tensor4D,
  opts: SampleOptions = {},
): Tensor4D {
  return loop(diffusion, xT, opts, (x, i) => ddpmStep(diffusion, denoise, x, i, opts));
}

/** Full DDIM sampling from x_T (Song et al. 2021 eq. 12). xT is not disposed; the result is the caller's. */
export function sampleDdim(
  diffusion: GaussianDiffusion,
  denoise: Denoiser,
  xT: Tensor4D,
  opts: DdimOptions = {},
): Tensor4D {
  return loop(diffusion, xT, opts, (x, i) => ddimStep(diffusion, denoise, x, i, opts));
}
