// The one interface every sampler implements, and the context a reverse loop hands it. A sampler chooses its
// timesteps or σs from a step count and a schedule, steps with explicit state (multistep methods keep their history
// there, not in closures), and declares how it takes gradient guidance. Nothing here names a strategy or a model:
// samplers see a `Denoiser` with guidance already folded in, as strategies hand it over.
import type { GaussianDiffusion } from "../diffusion.ts";
import type { Tensor4D } from "../engine.ts";
import type { Denoiser, NoiseSource, SamplerHooks, StepInfo } from "../types.ts";
import type { RecordedStep } from "./vp.ts";

/**
 * How a sampler picks its timesteps or σs. "default": the sampler's own (ddpm: guided-diffusion's even respacing;
 * ddim: "ddimN"; σ-space samplers: k-diffusion's get_sigmas, even in t; unipc: diffusers' linspace). "karras" and
 * "exponential": k-diffusion's σ schedules between the model's σ_min and σ_max (σ-space samplers only).
 * "leading", "trailing", "linspace": diffusers' timestep spacings (Lin et al. 2024, "Common Diffusion Noise
 * Schedules and Sample Steps are Flawed", Table 2).
 */
export const SCHEDULES = ["default", "karras", "exponential", "leading", "trailing", "linspace"] as const;
export type ScheduleName = (typeof SCHEDULES)[number];

/** Where the sampler's x lives: the VP x_t of the (respaced) tables, or k-diffusion's x_σ = x_t / sqrt(ᾱ). */
export type SamplerSpace = "vp" | "sigma";

/** The state of a multistep method between steps: tensors it owns (the loop disposes them) and scalars. */
export type SamplerState = Record<string, Tensor4D | number | undefined>;

/** Everything a run of a sampler sees; built by the reverse loop. */
export interface RunContext {
  /** The tables the sampler steps on: respaced for "vp" samplers, the model's full table for "sigma" samplers. */
  diffusion: GaussianDiffusion;
  denoise: Denoiser;
  hooks: SamplerHooks;
  noise: NoiseSource;
  /** Number of steps (σ-space samplers; vp samplers step every index of their respaced table). */
  steps: number;
  schedule: ScheduleName;
  /** DDIM's η, or the ancestral / SDE samplers' η (k-diffusion's `eta`). */
  eta: number;
  /** Called once per network evaluation with where it happened (NFE accounting). */
  onEval: (step: StepInfo) => void;
  /** VP samplers push each step's tensors here when given (golden checks). */
  recordSteps?: RecordedStep[];
}

/** One run: the loop asks for `length` steps, feeding each the previous x and state. */
export interface SamplerRun {
  readonly length: number;
  /** Where iteration k starts (what onStep reports). */
  info(k: number): StepInfo;
  /** x_T (standard normal, possibly tempered) as the sampler's starting x. */
  init(xT: Tensor4D): Tensor4D;
  /**
   * A clean image brought to the noise level of x after iteration k (k = −1: before the first step), with standard
   * normal `noise`; known-region replacement writes it into x. After the last iteration it is the image itself.
   */
  noised(image: Tensor4D, k: number, noise: Tensor4D): Tensor4D;
  /** Iteration k: x and the state in, the next x and state out. Must not dispose its inputs. */
  step(x: Tensor4D, k: number, state: SamplerState): { x: Tensor4D; state: SamplerState };
}

export interface SamplerDef {
  readonly name: string;
  readonly summary: string;
  readonly citation: string;
  readonly space: SamplerSpace;
  /**
   * How gradient guidance (`condFn`, ∇x log p(y|x_t) already scaled) enters: "mean" (μ + Σ·g, Dhariwal & Nichol 2021
   * Alg. 1) or "score" (ε − sqrt(1−ᾱ)·g, Alg. 2 / condition_score; in σ-space the same ε − σ·∇_{x_σ} log p).
   */
  readonly guidance: "mean" | "score";
  /** Whether the sampler draws from the noise source (at its η). */
  readonly stochastic: boolean;
  /** Whether `eta` is a parameter of this sampler, and its default. */
  readonly eta?: { default: number };
  readonly schedules: readonly ScheduleName[];
  /**
   * Whether the sampler takes a renoising prediction (Prediction.renoise): its update then denoises with `out` and
   * renoises with `renoise`, in the form the CFG++ paper and its reference code give for this sampler. Absent: the
   * loop refuses a prediction that carries one, so no sampler ignores it silently.
   */
  readonly renoise?: true;
  /** Network evaluations per step (Heun and DPM-2 evaluate twice except on the last step). */
  readonly evalsPerStep: number;
  /**
   * The respacing of the model's diffusion this sampler steps on, for `steps` steps over T training steps: vp
   * samplers take a respaced table, σ-space samplers the full one ("") and choose their σs themselves.
   */
  respacing(steps: number, schedule: ScheduleName, T: number): string | number[];
  start(ctx: RunContext): SamplerRun;
}
