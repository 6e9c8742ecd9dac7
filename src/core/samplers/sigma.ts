// The σ-space view of a discrete VP model (Karras et al. 2022 §2 / Table 1's VP column; k-diffusion's
// DiscreteEpsDDPMDenoiser): x_σ = x_t / sqrt(ᾱ) with σ = sqrt((1−ᾱ)/ᾱ), so that the probability-flow ODE is
// dx/dσ = (x − D(x; σ))/σ. The model is called at c_in·x_σ = x_t with the (fractional) timestep whose tabled
// log σ brackets log σ, linearly interpolated; D(x; σ) = x − σ·ε. Every σ-space sampler steps through this one view.
import type { GaussianDiffusion } from "../diffusion.ts";
import type { Tensor4D } from "../engine.ts";
import { tf } from "../engine.ts";
import type { StepInfo } from "../types.ts";
import type { RunContext, SamplerRun, SamplerState, ScheduleName } from "./sampler.ts";
import { exponentialSigmas, karrasSigmas, linspace, spacedTimesteps } from "./schedules.ts";

export class SigmaView {
  /** σ_i = sqrt((1 − ᾱ_i)/ᾱ_i) of every table index, ascending. */
  readonly sigmas: Float64Array;
  readonly logSigmas: Float64Array;

  constructor(readonly diffusion: GaussianDiffusion) {
    this.sigmas = diffusion.alphasCumprod.map((a) => Math.sqrt((1 - a) / a));
    this.logSigmas = this.sigmas.map(Math.log);
  }

  get sigmaMin(): number {
    return this.sigmas[0]!;
  }

  get sigmaMax(): number {
    return this.sigmas[this.sigmas.length - 1]!;
  }

  /**
   * k-diffusion's sigma_to_t (unquantised): the table index, fractional, whose log σ interpolates log σ linearly
   * between the bracketing entries (clamped to the table's ends).
   */
  sigmaToIndex(sigma: number, ls = Math.log(sigma)): number {
    const n = this.logSigmas.length;
    let low = 0;
    for (let i = 0; i < n; i++) if (ls - this.logSigmas[i]! >= 0) low = i;
    low = Math.min(low, n - 2);
    const lo = this.logSigmas[low]!;
    const hi = this.logSigmas[low + 1]!;
    const w = Math.min(1, Math.max(0, (lo - ls) / (lo - hi)));
    return (1 - w) * low + w * (low + 1);
  }

  /** k-diffusion's t_to_sigma: log σ interpolated linearly at a fractional table index. */
  indexToSigma(i: number): number {
    const lo = Math.floor(i);
    const hi = Math.ceil(i);
    const w = i - lo;
    return Math.exp((1 - w) * this.logSigmas[lo]! + w * this.logSigmas[hi]!);
  }

  /** Where a model call at σ (log σ: `ls`) happens: the original timestep (fractional), the nearest table index, iteration k. */
  stepInfo(sigma: number, k: number, ls = Math.log(sigma)): StepInfo {
    const i = this.sigmaToIndex(sigma, ls);
    const map = this.diffusion.timestepMap;
    const lo = Math.floor(i);
    const t = lo === i ? map[lo]! : map[lo]! + (i - lo) * (map[lo + 1]! - map[lo]!);
    return { index: Math.round(i), t, k };
  }

  /**
   * The σ schedule of a step count: k-diffusion's get_sigmas (even in table index, the default), Karras et al.
   * 2022 eq. 5 (ρ = 7) or exponential between the table's σ_min and σ_max, or diffusers' timestep spacings at
   * their tabled σs; a final 0 is appended. `plusOne`: the multistep schedulers' spacing variant (unipc).
   */
  schedule(steps: number, schedule: ScheduleName, plusOne = false): number[] {
    const T = this.sigmas.length;
    if (!Number.isInteger(steps) || steps < 1)
      throw new Error(`steps: expected a positive integer, got ${steps}`);
    if (schedule === "karras") return karrasSigmas(steps, this.sigmaMin, this.sigmaMax);
    if (schedule === "exponential") return exponentialSigmas(steps, this.sigmaMin, this.sigmaMax);
    if (schedule === "default") return [...linspace(T - 1, 0, steps).map((i) => this.indexToSigma(i)), 0];
    return [...spacedTimesteps(schedule, steps, T, plusOne).map((t) => this.sigmas[t]!), 0];
  }

  /**
   * The σ a model call is made at, and its step: σ rounded to float32 with the timestep from its float32 log, as
   * k-diffusion's samplers call their denoiser (`model(x, sigmas[i] * s_in)`, s_in in x's dtype; sigma_to_t on a
   * float32 σ); `exact` keeps σ as given (diffusers' UniPC calls its model at the table's integral timestep).
   */
  callAt(sigma: number, k: number, exact = false): { sigma: number; step: StepInfo } {
    if (exact) return { sigma, step: this.stepInfo(sigma, k) };
    const s = Math.fround(sigma);
    return { sigma: s, step: this.stepInfo(s, k, Math.fround(Math.log(s))) };
  }

  /**
   * D(x; σ) with the hooks: ε from the model's ε / v / x0 at x_t = x/sqrt(σ²+1), gradient guidance in score form
   * (ε' = ε − sqrt(1−ᾱ)·∇_{x_t} log p = ε − σ·∇_{x_σ} log p; Dhariwal & Nichol 2021 eq. 14, guided-diffusion's
   * condition_score), x0 = x − σ·ε', then denoisedFn and the optional clamp to [−1, 1]. With a renoising prediction
   * (Prediction.renoise) also its D_r = x − σ·ε_r, unprocessed: CFG++'s unconditional D, as the reference code takes
   * it from the raw unconditional branch (ComfyUI's post-CFG `uncond_denoised`).
   *
   * The call is at `callAt`'s σ and, as k-diffusion's get_scalings computes it on that float32 σ, c_in = 1/sqrt(σ² + 1)
   * from float32 operations (each Math.fround below is one float32 operation, exact in double first). The timestep
   * moves by ~1e-5 from the float64 σ's, which the loops amplify: on the golden GLIDE-small the float64 σ put
   * dpmpp_3m_sde's 8-step sample 3e-4 from every reference run (src/core/samplers/README.md).
   */
  denoisedPair(
    ctx: RunContext,
    x: Tensor4D,
    sigmaIn: number,
    k: number,
    exact = false,
  ): { denoised: Tensor4D; renoise?: Tensor4D } {
    const { sigma, step } = this.callAt(sigmaIn, k, exact);
    ctx.onEval(step);
    return tf.tidy(() => {
      const abar = 1 / (1 + sigma * sigma);
      const f = Math.fround;
      const cIn = exact ? Math.sqrt(abar) : f(1 / f(Math.sqrt(f(f(sigma * sigma) + 1))));
      const xt = tf.mul(x, cIn) as Tensor4D;
      const pred = ctx.denoise(xt, step);
      const epsOf = (out: Tensor4D): Tensor4D => {
        if (pred.kind === "eps") return out;
        if (pred.kind === "v")
          return tf.add(tf.mul(out, Math.sqrt(abar)), tf.mul(xt, Math.sqrt(1 - abar))) as Tensor4D;
        return tf.div(tf.sub(xt, tf.mul(out, Math.sqrt(abar))), Math.sqrt(1 - abar)) as Tensor4D;
      };
      let eps = epsOf(pred.out);
      if (ctx.hooks.condFn)
        eps = tf.sub(eps, tf.mul(ctx.hooks.condFn(xt, step), Math.sqrt(1 - abar))) as Tensor4D;
      let x0 = tf.sub(x, tf.mul(eps, sigma)) as Tensor4D;
      if (ctx.hooks.denoisedFn) x0 = ctx.hooks.denoisedFn(x0, step);
      if (ctx.hooks.clipDenoised ?? true) x0 = tf.clipByValue(x0, -1, 1);
      if (!pred.renoise) return { denoised: x0 };
      return { denoised: x0, renoise: tf.sub(x, tf.mul(epsOf(pred.renoise), sigma)) as Tensor4D };
    });
  }

  denoised(ctx: RunContext, x: Tensor4D, sigma: number, k: number, exact = false): Tensor4D {
    return this.denoisedPair(ctx, x, sigma, k, exact).denoised;
  }
}

/** What a σ-space step sees: the σ schedule (with its final 0), D(x; σ) and the per-step noise. */
export interface SigmaStepper {
  readonly sigmas: readonly number[];
  readonly eta: number;
  denoised(x: Tensor4D, sigma: number): Tensor4D;
  /**
   * D(x; σ) and, when the prediction carries one, the renoising D_r (samplers declaring `renoise` only; the others
   * never see one, the loop refuses it).
   */
  denoisedPair(x: Tensor4D, sigma: number): { denoised: Tensor4D; renoise?: Tensor4D };
  /** Standard normal noise of this iteration (the project's seeded per-step noise). */
  noise(shape: readonly number[]): Tensor4D;
}

export type SigmaStep = (
  s: SigmaStepper,
  x: Tensor4D,
  i: number,
  state: SamplerState,
) => { x: Tensor4D; state: SamplerState };

/** A σ-space run: x starts at x_T·σ_0, known pixels are image + σ·z, and each iteration is `step`. */
export function sigmaRun(
  ctx: RunContext,
  step: SigmaStep,
  opts: {
    plusOne?: boolean;
    /** Call the model at the schedule's σ itself, not at σ rounded to float32 (SigmaView.callAt). */
    exactSigma?: boolean;
  } = {},
): SamplerRun {
  const view = new SigmaView(ctx.diffusion);
  const sigmas = view.schedule(ctx.steps, ctx.schedule, opts.plusOne ?? false);
  const exact = opts.exactSigma ?? false;
  return {
    length: sigmas.length - 1,
    info: (k) => view.callAt(sigmas[k]!, k, exact).step,
    init: (xT) => tf.mul(xT, sigmas[0]!) as Tensor4D,
    noised: (image, k, noise) => {
      const s = sigmas[k + 1]!;
      return s === 0 ? tf.clone(image) : (tf.add(image, tf.mul(noise, s)) as Tensor4D);
    },
    step: (x, k, state) =>
      step(
        {
          sigmas,
          eta: ctx.eta,
          denoised: (xs, sigma) => view.denoised(ctx, xs, sigma, k, exact),
          denoisedPair: (xs, sigma) => view.denoisedPair(ctx, xs, sigma, k, exact),
          noise: (shape) => ctx.noise(k, [...shape]),
        },
        x,
        k,
        state,
      ),
  };
}

/** Karras et al. 2022's ODE derivative d = (x − D(x; σ))/σ (k-diffusion's to_d). */
export function toD(x: Tensor4D, sigma: number, denoised: Tensor4D): Tensor4D {
  return tf.div(tf.sub(x, denoised), sigma) as Tensor4D;
}
