// The one interface every guidance strategy implements. A strategy is built once from its validated config and
// the models it needs, then bound to a batch of prompts; the binding hands the (unchanged) samplers a guided
// `Denoiser` plus optional `condFn` / `denoisedFn`, and says how many network evaluations each step costs so that
// strategies are compared at equal compute. Models are plain functions so that the zoo's UNet, GLIDE's
// Text2ImUNet and guided-diffusion's class-conditional UNet all fit the same seam.
import type { z } from "zod";
import type { GaussianDiffusion } from "../core/diffusion.ts";
import type { Tensor1D, Tensor2D, Tensor4D } from "../core/engine.ts";
import type { CondFn, DenoisedFn, Denoiser, SamplerHooks, StepInfo } from "../core/types.ts";
import type { Conditioning, ModelFn } from "../nets/denoiser.ts";
import type { Perturbation } from "../nets/perturb.ts";

export type { Conditioning, ModelFn } from "../nets/denoiser.ts";

/** A noised classifier (guided-diffusion's EncoderUNet): d/dx Σ log p(y_b | x_b, t_b) · scale. */
export interface NoisedClassifier {
  condGrad(x: Tensor4D, t: Tensor1D, y: Tensor1D, scale: number): Tensor4D;
}

/** GLIDE's noised CLIP: d/dx [exp(logit_scale)·Σ ⟨z_image(x, t), z_text⟩] · scale. */
export interface NoisedClip {
  condGrad(x: Tensor4D, t: Tensor1D, zText: Tensor2D, scale: number): Tensor4D;
}

/** A CLIP trained on clean images: unit-norm embeddings [B, D] of NHWC x0 in [-1, 1], differentiable in x0. */
export interface CleanClip {
  embedImage(x0: Tensor4D): Tensor2D;
  /**
   * ∇_{x0} of clean-clip's loss computed elsewhere (a traced graph on ONNX Runtime), for the form that does not
   * differentiate through the denoiser; absent, it is taken with TensorFlow.js (`cleanClipGrad`).
   */
  lossGrad?(x0: Tensor4D, zText: Tensor2D): Tensor4D;
}

/** Everything a strategy may need; each strategy declares which keys it requires. */
export interface GuidanceModels {
  /** The denoiser being guided. */
  model: ModelFn;
  /** Prompts → the model's conditioning, one row per prompt (the caller of `encode` owns the tensors). */
  encode: (prompts: readonly string[]) => Conditioning;
  /** The prompt whose encoding is the unconditional branch (GLIDE: "" → all padding, empty mask). Default "". */
  unconditionalPrompt?: string;
  /** A weaker version of `model` (fewer training steps, smaller), for autoguidance. */
  weak?: ModelFn;
  /**
   * `model` with chosen blocks perturbed (nets/perturb.ts), for PAG, SEG, skip-layer guidance and autoguidance
   * with dropped layers; the provider builds each perturbation once (ONNX: one exported graph per configuration).
   * Its evaluations count as `model` calls: it is the same network.
   */
  perturbed?: (p: Perturbation) => ModelFn;
  classifier?: NoisedClassifier;
  /** Prompt → the classifier's label, for classifier guidance. */
  classifierLabel?: (prompt: string) => number;
  clip?: NoisedClip;
  /** Prompts → unit-norm noised-CLIP text embeddings z_text [B, D] (CLIP has its own tokenizer). */
  clipText?: (prompts: readonly string[]) => Tensor2D;
  /** A clean-image CLIP whose gradient on the predicted x0 guides (clean-clip; never the evaluation CLIP). */
  cleanClip?: CleanClip;
  /** Prompts → unit-norm clean-CLIP text embeddings [B, D]. */
  cleanClipText?: (prompts: readonly string[]) => Tensor2D;
  /**
   * `model` as a function that gradients with respect to x flow through, for strategies that differentiate through
   * the denoiser (clean-clip with backprop). The zoo's computes its backward in chunks of rows on `model`'s own
   * runtime (src/onnx/denoiser-vjp.ts); absent: `model` itself is differentiated on TensorFlow.js's tape.
   */
  gradModel?: ModelFn;
  /**
   * A guide by zoo name, for strategies that name their own (`{kind: clip, model: noised-clip-500}`): the bag keys
   * that model provides (clip + clipText, classifier, or cleanClip + cleanClipText). Throws naming the model.
   */
  guide?: (name: string) => Partial<GuidanceModels>;
  /** The sampling process, for strategies that work in x0 space (apg, clean-clip). */
  diffusion?: GaussianDiffusion;
}

/**
 * Network evaluations of one sampling step, per sample (a batched [cond; uncond] forward counts 2 for `model`).
 * Gradient guidance counts one forward+backward of the classifier or CLIP as 1.
 */
export interface ModelCalls {
  model: number;
  weak: number;
  classifier: number;
  clip: number;
}

/** Total network evaluations (NFE) of a step. */
export const nfe = (c: ModelCalls): number => c.model + c.weak + c.classifier + c.clip;

/** A strategy bound to one batch of prompts: what a sampler receives. */
export interface GuidedSampling {
  denoise: Denoiser;
  condFn?: CondFn;
  denoisedFn?: DenoisedFn;
  /** Set when the strategy needs the sampler's own x0 clamp off (cfg++: its references clamp neither D). */
  clipDenoised?: boolean;
  /** Network evaluations per sample that step `step` makes. */
  calls(step: StepInfo): ModelCalls;
  /** Frees the prompt encodings and any per-run state. */
  dispose(): void;
}

/** The sampler options a binding asks for, to spread into sampleDdpm / sampleDdim options. */
export function hooksOf(g: GuidedSampling): SamplerHooks {
  return {
    ...(g.condFn ? { condFn: g.condFn } : {}),
    ...(g.denoisedFn ? { denoisedFn: g.denoisedFn } : {}),
    ...(g.clipDenoised !== undefined ? { clipDenoised: g.clipDenoised } : {}),
  };
}

export interface Strategy<C extends { kind: string } = { kind: string }> {
  readonly config: C;
  /** Encodes the prompts once; bind again for every sampling run (stateful strategies such as apg reset). */
  bind(prompts: readonly string[]): GuidedSampling;
}

/** How a strategy at its neutral setting must behave, checked by the contract suite for every registry entry. */
export type NeutralReference = "conditional" | "unconditional" | "base";

/** Lets a wrapping strategy build the one it wraps without importing the registry (no import cycle). */
export interface BuildContext {
  build(config: { kind: string }, models: GuidanceModels): Strategy;
}

/** A registry entry. `C` is the parsed config (defaults applied). */
export interface StrategyDef<C extends { kind: string } = { kind: string }> {
  readonly kind: C["kind"];
  /** One line for listings and reports. */
  readonly summary: string;
  readonly citation: string;
  /** A minimal valid raw config (what `kind` alone plus required keys looks like), for listings and tests. */
  readonly example: { kind: C["kind"] } & Record<string, unknown>;
  /**
   * The strict schema of this kind; `nested` validates a wrapped strategy's config (the registry passes the
   * discriminated union of all kinds).
   */
  schema(nested: z.ZodType<{ kind: string }>): z.ZodType<C>;
  /**
   * For strategies whose config may name their guide (`model: NAME`): the bag keys that guide must provide (the
   * named model replaces the bag's default for these keys).
   */
  readonly guideKeys?: readonly (keyof GuidanceModels)[];
  /** Model-bag keys that must be present, checked before build so the error names the key. */
  requires(config: C): (keyof GuidanceModels)[];
  build(config: C, models: GuidanceModels, ctx: BuildContext): Strategy<C>;
  /** The config at the neutral setting (guidance off) and what it must then reproduce exactly. */
  neutral(config: C): { config: C; equals: NeutralReference };
  /**
   * The numeric config key that is this strategy's own guidance strength at a fixed `scale` (the perturbed-model
   * guides: `perturbScale`); reports draw its frontier curve along this key wherever a run varies it. Absent: the
   * strength is `scale` alone.
   */
  readonly strengthAxis?: string;
  /** Its prediction carries a renoising prediction (`Prediction.renoise`, CFG++) that the sampler must receive. */
  readonly renoises?: boolean;
  /**
   * A wrapping strategy that rebuilds its base's prediction without `renoise`: a base that renoises (itself or one it
   * wraps) is refused when the config is parsed, naming `base`, rather than dropped silently. Wrappers that pass
   * the base's prediction through (adding a condFn or denoisedFn) keep its `renoise` and leave this unset.
   */
  readonly refusesRenoisingBase?: boolean;
  /**
   * The samplers (registry names, with η where it matters) the strategy is defined for; absent: any sampler. A run
   * pairing it with another is refused before sampling.
   */
  readonly samplers?: readonly { name: string; eta?: number }[];
}
