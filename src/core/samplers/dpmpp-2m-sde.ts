// DPM-Solver++(2M) SDE (k-diffusion's sample_dpmpp_2m_sde, midpoint form; Lu et al. 2022 "DPM-Solver++" §4 with
// the SDE variant of Gonzalez et al. 2023 "SEEDS"): the data-prediction multistep update with noise injected at
// rate η. Noise: the project's seeded per-step normal, not k-diffusion's BrownianTreeNoiseSampler (see samplers
// README): per-step streams keep sweeps paired across cells, batches and shards.
import type { Tensor4D } from "../engine.ts";
import { tf } from "../engine.ts";
import type { SamplerDef } from "./sampler.ts";
import { SIGMA_SCHEDULES } from "./schedules.ts";
import { sigmaRun } from "./sigma.ts";

export const dpmpp2mSdeSampler: SamplerDef = {
  name: "dpmpp_2m_sde",
  summary: "DPM-Solver++(2M) SDE, midpoint (k-diffusion sample_dpmpp_2m_sde)",
  citation: "Lu et al. 2022 (DPM-Solver++); k-diffusion sample_dpmpp_2m_sde",
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
      if (to === 0) return { x: tf.clone(denoised), state: { denoised } };
      const h = Math.log(sigma) - Math.log(to);
      const etaH = s.eta * h;
      // x = (σ_{i+1}/σ_i)·e^{−ηh}·x + (1 − e^{−h−ηh})·D
      let next = tf.add(
        tf.mul(x, (to / sigma) * Math.exp(-etaH)),
        tf.mul(denoised, -Math.expm1(-h - etaH)),
      ) as Tensor4D;
      const old = state.denoised as Tensor4D | undefined;
      if (old) {
        const r = (state.h as number) / h;
        next = tf.add(
          next,
          tf.mul(tf.sub(denoised, old), 0.5 * -Math.expm1(-h - etaH) * (1 / r)),
        ) as Tensor4D;
      }
      if (s.eta)
        next = tf.add(next, tf.mul(s.noise(x.shape), to * Math.sqrt(-Math.expm1(-2 * etaH)))) as Tensor4D;
      return { x: next, state: { denoised, h } };
    }),
};
