// DPM-Solver++(3M) SDE (k-diffusion's sample_dpmpp_3m_sde; Lu et al. 2022 "DPM-Solver++" third-order multistep in
// data prediction, with noise at rate η): the last two D and step sizes live in the explicit state. Noise: the
// project's seeded per-step normal (see dpmpp-2m-sde.ts).
import type { Tensor4D } from "../engine.ts";
import { tf } from "../engine.ts";
import type { SamplerDef } from "./sampler.ts";
import { SIGMA_SCHEDULES } from "./schedules.ts";
import { sigmaRun } from "./sigma.ts";

export const dpmpp3mSdeSampler: SamplerDef = {
  name: "dpmpp_3m_sde",
  summary: "DPM-Solver++(3M) SDE (k-diffusion sample_dpmpp_3m_sde)",
  citation: "Lu et al. 2022 (DPM-Solver++); k-diffusion sample_dpmpp_3m_sde",
  space: "sigma",
  guidance: "score",
  stochastic: true,
  eta: { default: 1 },
  schedules: SIGMA_SCHEDULES,
  evalsPerStep: 1,
  respacing: () => "",
  start: (ctx) =>
    sigmaRun(ctx, (s, x, i, state) => {
      const sigma = s.sigmas[i]!;
      const to = s.sigmas[i + 1]!;
      const denoised = s.denoised(x, sigma);
      const d1 = state.d1 as Tensor4D | undefined;
      const d2 = state.d2 as Tensor4D | undefined;
      const h1 = state.h1 as number | undefined;
      const h2 = state.h2 as number | undefined;
      if (to === 0) return { x: tf.clone(denoised), state: {} };
      const h = Math.log(sigma) - Math.log(to);
      const hEta = h * (s.eta + 1);
      let next = tf.add(tf.mul(x, Math.exp(-hEta)), tf.mul(denoised, -Math.expm1(-hEta))) as Tensor4D;
      const phi2 = Math.expm1(-hEta) / hEta + 1;
      if (d2 && h2 !== undefined && d1 && h1 !== undefined) {
        const r0 = h1 / h;
        const r1 = h2 / h;
        const d10 = tf.div(tf.sub(denoised, d1), r0);
        const d11 = tf.div(tf.sub(d1, d2), r1);
        const dA = tf.add(d10, tf.mul(tf.sub(d10, d11), r0 / (r0 + r1)));
        const dB = tf.div(tf.sub(d10, d11), r0 + r1);
        const phi3 = phi2 / hEta - 0.5;
        next = tf.sub(tf.add(next, tf.mul(dA, phi2)), tf.mul(dB, phi3)) as Tensor4D;
      } else if (d1 && h1 !== undefined) {
        const d = tf.div(tf.sub(denoised, d1), h1 / h);
        next = tf.add(next, tf.mul(d, phi2)) as Tensor4D;
      }
      if (s.eta)
        next = tf.add(
          next,
          tf.mul(s.noise(x.shape), to * Math.sqrt(-Math.expm1(-2 * h * s.eta))),
        ) as Tensor4D;
      return { x: next, state: { d1: denoised, d2: d1, h1: h, h2: h1 } };
    }),
};
