// DPM-Solver-2 in σ (Lu et al. 2022, "DPM-Solver", Algorithm 1 with the midpoint in log σ, as k-diffusion's
// sample_dpm_2): the derivative at the geometric midpoint σ_mid = sqrt(σ_i·σ_{i+1}) carries the full step.
import type { Tensor4D } from "../engine.ts";
import { tf } from "../engine.ts";
import type { SamplerDef } from "./sampler.ts";
import { SIGMA_SCHEDULES } from "./schedules.ts";
import { sigmaRun, toD } from "./sigma.ts";

export const dpm2Sampler: SamplerDef = {
  name: "dpm_2",
  summary: "DPM-Solver-2 (midpoint in log σ, 2 evaluations per step; k-diffusion sample_dpm_2)",
  citation: "Lu et al. 2022 (DPM-Solver) Alg. 1; k-diffusion sample_dpm_2",
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
      if (to === 0) return { x: tf.add(x, tf.mul(d, to - sigma)) as Tensor4D, state };
      const ls = Math.log(sigma);
      const mid = Math.exp(ls + 0.5 * (Math.log(to) - ls));
      const x2 = tf.add(x, tf.mul(d, mid - sigma)) as Tensor4D;
      const d2 = toD(x2, mid, s.denoised(x2, mid));
      return { x: tf.add(x, tf.mul(d2, to - sigma)) as Tensor4D, state };
    }),
};
