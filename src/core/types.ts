// The seams between models, guidance strategies and samplers. Samplers only ever see a `Denoiser` that already
// applies whatever guidance a strategy chose, so new strategies never touch the sampling loops; keep this file
// small because every module codes against it.
import type { Tensor4D } from "./engine.ts";

/** Where a sampling loop is. Models and classifiers must receive `t` (the original timestep), never `index`. */
export interface StepInfo {
  /** Respaced index i into the diffusion's tables (numTimesteps-1 … 0). */
  index: number;
  /** ORIGINAL timestep (0..T-1) through the respacing map: what the official code feeds to models. */
  t: number;
  /** Loop iteration, 0 = first (noisiest) step. */
  k: number;
}

/** A model's (possibly guided) output, NHWC. */
export interface Prediction {
  /** The mean-parameterising channels: eps, x0 or v according to `kind`. */
  out: Tensor4D;
  kind: "eps" | "x0" | "v";
  /** Learned-range variance values v in [-1, 1] (Nichol & Dhariwal 2021), present for learned-sigma models. */
  varValues?: Tensor4D;
  /**
   * Channels of the same kind as `out` whose noise the sampler renoises with, where that differs from `out`'s (CFG++,
   * Chung et al. 2025: guided prediction denoises, unconditional renoises). Only samplers declaring `renoise` take
   * it (the loop refuses it elsewhere); gradient guidance, denoisedFn and the x0 clamp apply to `out` only.
   */
  renoise?: Tensor4D;
}

/** A model with guidance already folded in; must not dispose its input. */
export type Denoiser = (x: Tensor4D, step: StepInfo) => Prediction;

/** ∇x log p(y | x_t), already multiplied by the guidance scale. */
export type CondFn = (x: Tensor4D, step: StepInfo) => Tensor4D;

/** Applied to the predicted x0 before the posterior mean (clipping, dynamic thresholding, inpainting). */
export type DenoisedFn = (x0: Tensor4D, step: StepInfo) => Tensor4D;

/** Standard normal noise for loop iteration k; injectable so that recorded noise can be replayed. */
export type NoiseSource = (k: number, shape: number[]) => Tensor4D;

export interface SamplerHooks {
  condFn?: CondFn;
  denoisedFn?: DenoisedFn;
  onStep?: (info: StepInfo & { total: number }) => void;
  /** Clamp the predicted x0 to [-1, 1] (after denoisedFn), as the official samplers do by default. */
  clipDenoised?: boolean;
}
