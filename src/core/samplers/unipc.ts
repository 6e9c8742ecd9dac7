// UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models"),
// B(h) = e^h − 1 ("bh2"), order 2, data prediction, lower order on the first and last steps: diffusers'
// UniPCMultistepScheduler at its defaults (solver_order 2, predict_x0, lower_order_final, no thresholding, timestep
// spacing "linspace" with its N+1-point variant). diffusers steps VP x_t with α_t, σ_t; dividing every update by α_t
// gives the same method on x_σ = x_t/α_t with λ = −log σ, which is how it runs here. The corrector at step i reuses
// step i's model output, so NFE = steps.
import type { Tensor4D } from "../engine.ts";
import { tf } from "../engine.ts";
import type { SamplerDef } from "./sampler.ts";
import { SIGMA_SCHEDULES } from "./schedules.ts";
import { sigmaRun } from "./sigma.ts";

/**
 * UniPC's coefficients for one update from σ_s0 to σ_t (Zhao et al. 2023 Alg. 1/2 with B(h) = e^h − 1):
 * hh = −h with h = λ_t − λ_s0; h·φ_1 = e^{hh} − 1; b_k = h·φ_{k+1}·k!/B(h) for k = 1..order.
 */
function coefficients(sigmaS0: number, sigmaT: number, order: number) {
  const h = Math.log(sigmaS0) - Math.log(sigmaT);
  const hh = -h;
  const hPhi1 = Math.expm1(hh);
  const bh = Math.expm1(hh);
  const b: number[] = [];
  let hPhiK = hPhi1 / hh - 1;
  let factorial = 1;
  for (let k = 1; k <= order; k++) {
    b.push((hPhiK * factorial) / bh);
    factorial *= k + 1;
    hPhiK = hPhiK / hh - 1 / factorial;
  }
  return { h, hPhi1, bh, b };
}

/** r_k = (λ_{s_k} − λ_{s0})/h, the relative position of an older point (λ = −log σ). */
const rk = (sigmaSi: number, sigmaS0: number, h: number) => (Math.log(sigmaS0) - Math.log(sigmaSi)) / h;

export const unipcSampler: SamplerDef = {
  name: "unipc",
  summary: "UniPC bh2, order 2, predictor-corrector (diffusers UniPCMultistepScheduler defaults)",
  citation: "Zhao et al. 2023 (UniPC) Alg. 1–2, B(h) = e^h − 1",
  space: "sigma",
  guidance: "score",
  stochastic: false,
  schedules: SIGMA_SCHEDULES,
  evalsPerStep: 1,
  respacing: () => "",
  start: (ctx) => {
    const n = ctx.steps;
    const schedule = ctx.schedule === "default" ? "linspace" : ctx.schedule;
    return sigmaRun(
      { ...ctx, schedule },
      (s, x, i, state) => {
        const sg = s.sigmas;
        const m = s.denoised(x, sg[i]!);
        const m0 = state.m0 as Tensor4D | undefined;
        const m1 = state.m1 as Tensor4D | undefined;
        const last = state.last as Tensor4D | undefined;
        let xc = x;
        if (i > 0 && last && m0) {
          // UniC (corrector) with the previous step's order, from σ_{i−1} to σ_i, using this step's output m.
          const order = state.order as number;
          const c = coefficients(sg[i - 1]!, sg[i]!, order);
          let corr = tf.sub(tf.mul(last, sg[i]! / sg[i - 1]!), tf.mul(m0, c.hPhi1)) as Tensor4D;
          const dt = tf.sub(m, m0);
          if (order === 1) {
            corr = tf.sub(corr, tf.mul(dt, c.bh * 0.5)) as Tensor4D;
          } else {
            // solve [[1, 1], [r, 1]]·ρ = b for the order-2 corrector
            const r = rk(sg[i - 2]!, sg[i - 1]!, c.h);
            const rho0 = (c.b[1]! - c.b[0]!) / (r - 1);
            const rho1 = c.b[0]! - rho0;
            const d1 = tf.div(tf.sub(m1!, m0), r);
            corr = tf.sub(corr, tf.mul(tf.add(tf.mul(d1, rho0), tf.mul(dt, rho1)), c.bh)) as Tensor4D;
          }
          xc = corr;
        }
        const lowerOrderNums = (state.lower as number | undefined) ?? 0;
        const order = Math.min(2, n - i, lowerOrderNums + 1);
        // UniP (predictor) from σ_i to σ_{i+1}; m is now the newest output, m0 the one before.
        const c = coefficients(sg[i]!, sg[i + 1]!, order);
        let next: Tensor4D;
        if (sg[i + 1] === 0) next = tf.clone(m);
        else {
          next = tf.sub(tf.mul(xc, sg[i + 1]! / sg[i]!), tf.mul(m, c.hPhi1)) as Tensor4D;
          if (order === 2) {
            const r = rk(sg[i - 1]!, sg[i]!, c.h);
            const d1 = tf.div(tf.sub(m0!, m), r);
            next = tf.sub(next, tf.mul(d1, c.bh * 0.5)) as Tensor4D;
          }
        }
        return {
          x: next,
          state: { m0: m, m1: m0, last: xc, order, lower: Math.min(lowerOrderNums + 1, 2) },
        };
      },
      // diffusers calls the model at its table's integral timesteps
      { plusOne: true, exactSigma: true },
    );
  },
};
