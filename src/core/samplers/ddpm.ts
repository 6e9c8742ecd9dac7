// Ancestral sampling (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Algorithm 2) on the respaced
// tables with guided-diffusion's variances. The order inside a step follows the official code (model call, then
// noise, then the guidance gradient) so that recorded reference trajectories replay exactly.
import type { GaussianDiffusion } from "../diffusion.ts";
import type { Tensor4D } from "../engine.ts";
import { tf } from "../engine.ts";
import type { Denoiser } from "../types.ts";
import { seededNoise } from "./noise.ts";
import type { SamplerDef } from "./sampler.ts";
import { pmvFor, record, type StepOptions, type StepOutput, vpRespacing, vpRun } from "./vp.ts";

/**
 * One ancestral step x_t → x_{t-1} = μ + σ·z (Ho et al. 2020 Algorithm 2 with eq. 11's mean), with gradient guidance
 * on the mean (Dhariwal & Nichol 2021 Algorithm 1). No noise at index 0. The caller owns both outputs.
 */
export function ddpmStep(
  diffusion: GaussianDiffusion,
  denoise: Denoiser,
  x: Tensor4D,
  index: number,
  opts: StepOptions = {},
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

export const ddpmSampler: SamplerDef = {
  name: "ddpm",
  summary: "ancestral sampling with the model's (learned or fixed) variances",
  citation: "Ho et al. 2020 Alg. 2; Nichol & Dhariwal 2021 eq. 15",
  space: "vp",
  guidance: "mean",
  stochastic: true,
  schedules: ["default", "leading", "trailing", "linspace"],
  evalsPerStep: 1,
  respacing: (steps, schedule, T) => vpRespacing(steps, schedule, T, String),
  start: (ctx) => vpRun(ctx, ddpmStep),
};
