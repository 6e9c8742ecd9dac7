// DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
// Models", Algorithm 2, data prediction, multistep), in k-diffusion's σ form (sample_dpmpp_2m), with t = −log σ.
// The previous step's D lives in the explicit state. With a renoising prediction, CFG++'s DPM-Solver++(2M) form
// (Chung et al. 2025, arXiv 2406.08070, appendix; the authors' DPMpp2mCFGppSolver, ComfyUI's sample_dpmpp_2m_cfg_pp):
//   x_{i+1} = e^{−h}·x_i + D − e^{−h}·D_r + (1 − e^{−h})·(D − D_r,{i−1})/(2r)
// (the correction only with a previous step and σ_{i+1} > 0), and the state keeps D_r, the renoising D, where the
// plain method keeps D: the reference's old_uncond_denoised.
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
  renoise: true,
  respacing: () => "",
  start: (ctx) =>
    sigmaRun(ctx, (s, x, i, state) => {
      const sigma = s.sigmas[i]!;
      const to = s.sigmas[i + 1]!;
      const { denoised, renoise } = s.denoisedPair(x, sigma);
      const h = -Math.log(to) + Math.log(sigma);
      const old = state.denoised as Tensor4D | undefined;
      const r = old && to !== 0 ? (Math.log(s.sigmas[i - 1]!) - Math.log(sigma)) / h : undefined;
      if (renoise) {
        // CFG++: e^{−h}·x + D − e^{−h}·D_r + (1 − e^{−h})·(D − D_r,{i−1})/(2r), as the reference forms it
        let mix = tf.mul(renoise, -Math.exp(-h)) as Tensor4D;
        if (r !== undefined)
          mix = tf.sub(mix, tf.mul(tf.sub(denoised, old!), Math.expm1(-h) / (2 * r))) as Tensor4D;
        const next = tf.add(tf.add(denoised, mix), tf.mul(x, Math.exp(-h))) as Tensor4D;
        return { x: next, state: { denoised: renoise } };
      }
      let dd = denoised;
      // D_i + (D_i − D_{i−1})/(2r), r = h_{i−1}/h_i (DPM-Solver++ Alg. 2's second-order correction)
      if (r !== undefined)
        dd = tf.sub(tf.mul(denoised, 1 + 1 / (2 * r)), tf.mul(old!, 1 / (2 * r))) as Tensor4D;
      // x_{i+1} = (σ_{i+1}/σ_i)·x_i − (e^{−h} − 1)·D
      const next = tf.sub(tf.mul(x, to / sigma), tf.mul(dd, Math.expm1(-h))) as Tensor4D;
      return { x: next, state: { denoised } };
    }),
};
