// Heun's second-order method on the probability-flow ODE in σ (Karras et al. 2022 Algorithm 2 without churn;
// k-diffusion's sample_heun): two evaluations per step, Euler on the last step (σ = 0 has no derivative).
import type { Tensor4D } from "../engine.ts";
import { tf } from "../engine.ts";
import type { SamplerDef } from "./sampler.ts";
import { SIGMA_SCHEDULES } from "./schedules.ts";
import { sigmaRun, toD } from "./sigma.ts";

export const heunSampler: SamplerDef = {
  name: "heun",
  summary: "Heun (2nd order, 2 evaluations per step) on the ODE in σ (k-diffusion sample_heun)",
  citation: "Karras et al. 2022 Alg. 2 (s_churn = 0)",
  space: "sigma",
  guidance: "score",
  stochastic: false,
  schedules: SIGMA_SCHEDULES,
  evalsPerStep: 2,
  respacing: () => "",
  start: (ctx) =>
    sigmaRun(ctx, (s, x, i, state) => {
      const sigma = s.sigmas[i]!;
      const to = s.sigmas[i + 1]!;
      const d = toD(x, sigma, s.denoised(x, sigma));
      const dt = to - sigma;
      const x2 = tf.add(x, tf.mul(d, dt)) as Tensor4D;
      if (to === 0) return { x: x2, state };
      // x_{i+1} = x_i + (σ_{i+1} − σ_i)·(d_i + d'_{i+1})/2
      const d2 = toD(x2, to, s.denoised(x2, to));
      return { x: tf.add(x, tf.mul(tf.add(d, d2), dt / 2)) as Tensor4D, state };
    }),
};
