// Euler steps on the probability-flow ODE in σ (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
// Generative Models", Algorithm 2 without churn; k-diffusion's sample_euler).

import type { Tensor4D } from "../engine.ts";
import { tf } from "../engine.ts";
import type { SamplerDef } from "./sampler.ts";
import { SIGMA_SCHEDULES } from "./schedules.ts";
import { sigmaRun, toD } from "./sigma.ts";

export const eulerSampler: SamplerDef = {
  name: "euler",
  summary: "Euler on the probability-flow ODE in σ (k-diffusion sample_euler)",
  citation: "Karras et al. 2022 Alg. 2 (s_churn = 0)",
  space: "sigma",
  guidance: "score",
  stochastic: false,
  schedules: SIGMA_SCHEDULES,
  evalsPerStep: 1,
  respacing: () => "",
  start: (ctx) =>
    sigmaRun(ctx, (s, x, i, state) => {
      const sigma = s.sigmas[i]!;
      const denoised = s.denoised(x, sigma);
      // x_{i+1} = x_i + (σ_{i+1} − σ_i)·d_i
      const next = tf.add(x, tf.mul(toD(x, sigma, denoised), s.sigmas[i + 1]! - sigma)) as Tensor4D;
      return { x: next, state };
    }),
};
