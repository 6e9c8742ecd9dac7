// DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models") on the respaced tables, with gradient guidance on
// the score as guided-diffusion's ddim_sample_loop does.
import type { GaussianDiffusion } from "../diffusion.ts";
import type { Tensor4D } from "../engine.ts";
import { tf } from "../engine.ts";
import type { Denoiser } from "../types.ts";
import { seededNoise } from "./noise.ts";
import type { SamplerDef } from "./sampler.ts";
import { pmvFor, record, type StepOptions, type StepOutput, vpRespacing, vpRun } from "./vp.ts";

export interface DdimOptions extends StepOptions {
  /** 0 = deterministic DDIM; 1 ≈ DDPM's variance (Song et al. 2021 eq. 16). */
  eta?: number;
}

/**
 * One DDIM step (Song et al. 2021 eq. 12): x_{t-1} = sqrt(ᾱ_prev)·x0 + sqrt(1 − ᾱ_prev − σ²)·ε + σ·z with
 * σ = η·sqrt((1−ᾱ_prev)/(1−ᾱ))·sqrt(1 − ᾱ/ᾱ_prev) (eq. 16); gradient guidance on the score (Dhariwal & Nichol 2021
 * Algorithm 2). ε is recomputed from the (clipped, guided) x0, as the reference does, or is the renoising
 * prediction's ε when the denoiser gives one (CFG++).
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
    const pmv = pmvFor(diffusion, denoise, x, step, opts);
    const out = opts.condFn ? diffusion.conditionScore(pmv, x, step, opts.condFn) : pmv;
    // CFG++ (Chung et al. 2025, arXiv 2406.08070, Alg. 1 at η = 0): the renoising prediction's ε takes the place of
    // the ε implied by x0 in the direction term; x0 stays the guided one.
    const eps = pmv.renoiseEps ?? diffusion.predictEpsFromXstart(x, index, out.predXstart);
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

export const ddimSampler: SamplerDef = {
  name: "ddim",
  summary: "DDIM; η = 0 deterministic, η = 1 ≈ DDPM's variance",
  citation: "Song et al. 2021 eq. 12 and 16",
  space: "vp",
  guidance: "score",
  stochastic: true,
  eta: { default: 0 },
  schedules: ["default", "leading", "trailing", "linspace"],
  renoise: true,
  evalsPerStep: 1,
  respacing: (steps, schedule, T) => vpRespacing(steps, schedule, T, (n) => `ddim${n}`),
  start: (ctx) => vpRun(ctx, ddimStep),
};
