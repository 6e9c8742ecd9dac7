// Euler steps on the probability-flow ODE in σ (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
// Generative Models", Algorithm 2 without churn; k-diffusion's sample_euler). With a renoising prediction, CFG++'s
// Euler form (Chung et al. 2025, arXiv 2406.08070, appendix; the authors' EulerCFGppSolver, ComfyUI's
// sample_euler_cfg_pp): x_{i+1} = D + σ_{i+1}·(x_i − D_r)/σ_i — denoise with D, renoise with D_r's direction.

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
  renoise: true,
  respacing: () => "",
  start: (ctx) =>
    sigmaRun(ctx, (s, x, i, state) => {
      const sigma = s.sigmas[i]!;
      const to = s.sigmas[i + 1]!;
      const { denoised, renoise } = s.denoisedPair(x, sigma);
      // CFG++: x_{i+1} = D + σ_{i+1}·(x_i − D_r)/σ_i (with D_r = D this is the line below, written apart so that
      // the plain step rounds as k-diffusion's does)
      if (renoise) return { x: tf.add(denoised, tf.mul(toD(x, sigma, renoise), to)) as Tensor4D, state };
      // x_{i+1} = x_i + (σ_{i+1} − σ_i)·d_i
      const next = tf.add(x, tf.mul(toD(x, sigma, denoised), to - sigma)) as Tensor4D;
      return { x: next, state };
    }),
};
