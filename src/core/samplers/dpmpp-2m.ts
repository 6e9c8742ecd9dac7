// DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
// Models", Algorithm 2, data prediction, multistep), in k-diffusion's σ form (sample_dpmpp_2m), with t = −log σ.
// The previous step's D lives in the explicit state.
import type { Tensor4D } from "../engine.ts";
import { tf } from "../engine.ts";
import type { SamplerDef } from "./sampler.ts";
import { SIGMA_SCHEDULES } from "./schedules.ts";
import { sigmaRun } from "./sigma.ts";

export const dpmpp2mSampler: SamplerDef = {
  name: "dpmpp_2m",
  summary: "DPM-Solver++(2M), data prediction, multistep (k-diffusion sample_dpmpp_2m)",
  citation: "Lu et al. 2022 (DPM-Solver++) Alg. 2",
  space: "sigma",
  guidance: "score",
  stochastic: false,
  schedules: SIGMA_SCHEDULES,
  evalsPerStep: 1,
  respacing: () => "",
  start: (ctx) =>
    sigmaRun(ctx, (s, x, i, state) => {
      const sigma = s.sigmas[i]!;
      const to = s.sigmas[i + 1]!;
      const denoised = s.denoised(x, sigma);
      const h = -Math.log(to) + Math.log(sigma);
      const old = state.denoised as Tensor4D | undefined;
      let dd = denoised;
      if (old && to !== 0) {
        // D_i + (D_i − D_{i−1})/(2r), r = h_{i−1}/h_i (DPM-Solver++ Alg. 2's second-order correction)
        const r = (Math.log(s.sigmas[i - 1]!) - Math.log(sigma)) / h;
        dd = tf.sub(tf.mul(denoised, 1 + 1 / (2 * r)), tf.mul(old, 1 / (2 * r))) as Tensor4D;
      }
      // x_{i+1} = (σ_{i+1}/σ_i)·x_i − (e^{−h} − 1)·D
      const next = tf.sub(tf.mul(x, to / sigma), tf.mul(dd, Math.expm1(-h))) as Tensor4D;
      return { x: next, state: { denoised } };
    }),
};
