// Ancestral Euler (k-diffusion's sample_euler_ancestral): an Euler step down to σ_down, then fresh noise of
// variance σ_up² so that the marginal at σ_{i+1} is right (σ_up from Song et al. 2021's DDIM η, eq. 16 in σ form).
// With a renoising prediction, CFG++'s ancestral Euler form (Chung et al. 2025, arXiv 2406.08070, appendix; the
// authors' EulerAncestralCFGppSolver at η = 1, ComfyUI's sample_euler_ancestral_cfg_pp at any η, VP: α = 1):
// x_{i+1} = D + σ_down·(x_i − D_r)/σ_i + σ_up·z, and x = D at the last step.
import type { Tensor4D } from "../engine.ts";
import { tf } from "../engine.ts";
import type { SamplerDef } from "./sampler.ts";
import { SIGMA_SCHEDULES } from "./schedules.ts";
import { sigmaRun, toD } from "./sigma.ts";

/**
 * k-diffusion's get_ancestral_step: σ_up = min(σ_to, η·sqrt(σ_to²(σ_from² − σ_to²)/σ_from²)) and
 * σ_down = sqrt(σ_to² − σ_up²) (the DDIM η-interpolation, Song et al. 2021 eq. 16, in σ-space).
 */
export function ancestralStep(from: number, to: number, eta: number): { down: number; up: number } {
  if (!eta) return { down: to, up: 0 };
  const up = Math.min(to, eta * Math.sqrt((to ** 2 * (from ** 2 - to ** 2)) / from ** 2));
  return { down: Math.sqrt(to ** 2 - up ** 2), up };
}

export const eulerAncestralSampler: SamplerDef = {
  name: "euler_ancestral",
  summary: "Euler down to σ_down plus fresh noise σ_up (k-diffusion sample_euler_ancestral)",
  citation: "k-diffusion sample_euler_ancestral; Song et al. 2021 eq. 16 for σ_up",
  space: "sigma",
  guidance: "score",
  stochastic: true,
  eta: { default: 1 },
  schedules: SIGMA_SCHEDULES,
  evalsPerStep: 1,
  renoise: true,
  respacing: () => "",
  start: (ctx) =>
    sigmaRun(ctx, (s, x, i, state) => {
      const sigma = s.sigmas[i]!;
      const to = s.sigmas[i + 1]!;
      const { denoised, renoise } = s.denoisedPair(x, sigma);
      const { down, up } = ancestralStep(sigma, to, s.eta);
      let next = renoise
        ? (tf.add(denoised, tf.mul(toD(x, sigma, renoise), down)) as Tensor4D)
        : (tf.add(x, tf.mul(toD(x, sigma, denoised), down - sigma)) as Tensor4D);
      if (to > 0) next = tf.add(next, tf.mul(s.noise(x.shape), up)) as Tensor4D;
      return { x: next, state };
    }),
};
