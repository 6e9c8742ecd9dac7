// Behaviour every strategy shares, written once: config pieces (scales, the guidance window), batching several
// conditionings into one model call, the [conditional; unconditional] pair that the classifier-free family is built
// on (with the neutral setting making only the one call the unguided sampler makes), and composition of strategies.
//
// Guidance interval (Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval Improves Sample and
// Distribution Quality in Diffusion Models", arXiv 2404.07724): guidance is applied only for noise levels in an
// interval; here the interval is over ORIGINAL timesteps, t ∈ [tMin, tMax]. Outside it a classifier-free-style
// strategy makes the single conditional call and gradient guidance contributes nothing.
import { z } from "zod";
import type { Tensor, Tensor1D, Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import type { CondFn, DenoisedFn, Prediction, StepInfo } from "../core/types.ts";
import { MODEL_NAME } from "../nets/model-name.ts";
import type { Perturbation } from "../nets/perturb.ts";
import type {
  BuildContext,
  Conditioning,
  GuidanceModels,
  GuidedSampling,
  ModelCalls,
  ModelFn,
  Strategy,
  StrategyDef,
} from "./strategy.ts";

// ---------------------------------------------------------------- config pieces

/** A guidance scale with its allowed range; out-of-range values are errors that name the key. */
export function scaleSchema(opts: { default: number; min?: number; max?: number }) {
  let s = z.number();
  if (opts.min !== undefined) s = s.min(opts.min);
  if (opts.max !== undefined) s = s.max(opts.max);
  return s.default(opts.default);
}

/** The guidance window's keys, spread into every schema that guides. */
export const windowFields = {
  /** Guide only at original timesteps t ≥ tMin. */
  tMin: z.number().int().min(0).default(0),
  /** Guide only at original timesteps t ≤ tMax (omitted: no upper bound). */
  tMax: z.number().int().min(0).optional(),
};

export interface GuidanceWindow {
  tMin: number;
  tMax?: number | undefined;
}

/** Refinement for schemas with windowFields: an empty interval is almost certainly a typo. */
export function checkWindow(v: GuidanceWindow, ctx: z.RefinementCtx): void {
  if (v.tMax !== undefined && v.tMax < v.tMin) {
    ctx.addIssue({
      code: "custom",
      path: ["tMax"],
      message: `tMax (${v.tMax}) must be ≥ tMin (${v.tMin})`,
    });
  }
}

export const inWindow = (w: GuidanceWindow, step: StepInfo): boolean =>
  step.t >= w.tMin && (w.tMax === undefined || step.t <= w.tMax);

/** Throws, naming the key, when a model the strategy needs is missing from the bag. */
export function requireModels(kind: string, models: GuidanceModels, keys: readonly (keyof GuidanceModels)[]) {
  for (const key of keys) {
    if (models[key] === undefined) {
      throw new Error(`strategy '${kind}': needs models.${key}, which was not given`);
    }
  }
}

// ---------------------------------------------------------------- model calls

/** tf.tidy for a Prediction (whose interface type tfjs's TensorContainer does not accept as is). */
export const tidyPred = (fn: () => Prediction): Prediction =>
  tf.tidy(fn as unknown as () => Tensor) as unknown as Prediction;

export const NO_CALLS: ModelCalls = { model: 0, weak: 0, classifier: 0, clip: 0 };

export const addCalls = (a: ModelCalls, b: Partial<ModelCalls>): ModelCalls => ({
  model: a.model + (b.model ?? 0),
  weak: a.weak + (b.weak ?? 0),
  classifier: a.classifier + (b.classifier ?? 0),
  clip: a.clip + (b.clip ?? 0),
});

/** One timestep tensor for n rows: models receive the original t. */
export const timesteps = (n: number, step: StepInfo): Tensor1D =>
  // σ-space samplers call between table entries (fractional t, float32); the discrete samplers keep int32.
  tf.fill([n], step.t, Number.isInteger(step.t) ? "int32" : "float32") as Tensor1D;

/** Concatenates conditionings along the batch so that one forward serves all of them. */
export function concatCond(parts: readonly Conditioning[]): Conditioning {
  const first = parts[0];
  if (!first) throw new Error("concatCond: no conditionings");
  const out: Conditioning = {};
  // Spatial inputs (super-res low-res image, inpainting image and mask) are per-run, not per-prompt: the pipelines
  // bind them to the model. Dropping one silently would sample the wrong model, so refuse it here.
  for (const p of parts) {
    const extra = Object.keys(p).filter(
      (k) => !["tokens", "mask", "y"].includes(k) && p[k as keyof Conditioning],
    );
    if (extra.length) {
      throw new Error(
        `concatCond: conditioning keys ${extra.join(", ")} are not per-prompt; bind them to the model`,
      );
    }
  }
  for (const key of ["tokens", "mask", "y"] as const) {
    const present = parts.map((p) => p[key]);
    if (present.every((t) => t === undefined)) continue;
    if (present.some((t) => t === undefined)) {
      throw new Error(`concatCond: '${key}' is present in some conditionings and missing in others`);
    }
    const ts = present as Tensor[];
    // tf.concat needs one dtype; token ids and masks may arrive as int32 or float32 from different encoders.
    const dtype = ts[0]!.dtype;
    (out as Record<string, Tensor>)[key] = tf.concat(
      ts.map((t) => (t.dtype === dtype ? t : tf.cast(t, dtype))),
    );
  }
  return out;
}

export function disposeCond(c: Conditioning | undefined): void {
  if (!c) return;
  tf.dispose([c.tokens, c.mask, c.y].filter((t): t is NonNullable<typeof t> => t !== undefined));
}

/** Rows [from, from+n) of a prediction. */
export function predRows(p: Prediction, from: number, n: number): Prediction {
  const rows = (t: Tensor4D) => tf.slice(t, [from, 0, 0, 0], [n, -1, -1, -1]) as Tensor4D;
  return p.varValues
    ? { out: rows(p.out), kind: p.kind, varValues: rows(p.varValues) }
    : { out: rows(p.out), kind: p.kind };
}

/** A copy of a prediction with new mean-parameterising channels, keeping the variance of `varFrom`. */
export function withOut(
  varFrom: Prediction,
  out: Tensor4D,
  kind: Prediction["kind"] = varFrom.kind,
): Prediction {
  return varFrom.varValues ? { out, kind, varValues: varFrom.varValues } : { out, kind };
}

/** Calls `model` on x repeated `copies` times against a conditioning with copies·B rows. */
export function forwardRepeated(
  model: ModelFn,
  x: Tensor4D,
  step: StepInfo,
  cond: Conditioning,
  copies: number,
): Prediction {
  const xs = copies === 1 ? x : (tf.concat(Array<Tensor4D>(copies).fill(x)) as Tensor4D);
  return model(xs, timesteps(xs.shape[0], step), cond);
}

/**
 * eps_u + s·(eps_c − eps_u), the classifier-free combination (GLIDE's convention: s = 1 is the conditional model).
 * Written as the official code does so that results round identically.
 */
export const cfgEps = (epsC: Tensor4D, epsU: Tensor4D, s: number): Tensor4D =>
  tf.add(epsU, tf.mul(s, tf.sub(epsC, epsU))) as Tensor4D;

/** Encodes prompts, naming the strategy and the batch when the encoder fails. */
export function encodeFor(kind: string, models: GuidanceModels, prompts: readonly string[]): Conditioning {
  if (prompts.length === 0) throw new Error(`strategy '${kind}': no prompts to bind`);
  return models.encode(prompts);
}

export const unconditionalPrompts = (models: GuidanceModels, n: number): string[] =>
  Array<string>(n).fill(models.unconditionalPrompt ?? "");

export interface PairOptions {
  kind: string;
  models: GuidanceModels;
  prompts: readonly string[];
  /** Prompts of the second branch: the unconditional prompt, or negative prompts. */
  otherPrompts: readonly string[];
  /** False at the neutral setting: every step makes the single `neutralBranch` call and nothing else. */
  enabled: boolean;
  window: GuidanceWindow;
  /** Which branch a disabled strategy reproduces (cfg: the conditional model; cfg++ at λ = 0: the other). */
  neutralBranch?: "cond" | "other";
  /** The guided prediction from both branches' predictions (each [B, ...]); runs inside a tidy scope. */
  combine(cond: Prediction, other: Prediction, x: Tensor4D, step: StepInfo): Prediction;
  /**
   * Steps at which the strategy replaces the conditional prediction instead of guiding (CFG-Zero*'s zeroed first
   * steps): the one conditional call, then `apply` on it inside a tidy scope. Checked before the window.
   */
  replace?: { at(step: StepInfo): boolean; apply(cond: Prediction, step: StepInfo): Prediction };
  /** Called at bind time and when a new run starts (k = 0), for strategies with per-run state. */
  reset?: () => void;
  extraDispose?: () => void;
}

/**
 * The classifier-free family's skeleton: one batched forward of [conditional; other] on the same x when guidance
 * is on at this step, else the one call of the unguided sampler, so that a strategy at its neutral setting is
 * bit-for-bit the unguided sampler and costs no extra evaluation.
 */
export function pairGuided(o: PairOptions): GuidedSampling {
  const b = o.prompts.length;
  if (o.otherPrompts.length !== b) {
    throw new Error(`strategy '${o.kind}': ${o.otherPrompts.length} second-branch prompts for ${b} prompts`);
  }
  const cond = encodeFor(o.kind, o.models, o.prompts);
  const other = o.models.encode(o.otherPrompts);
  const both = o.enabled ? concatCond([cond, other]) : undefined;
  const neutral = o.neutralBranch === "other" ? other : cond;
  const replaced = (step: StepInfo) => o.replace?.at(step) === true;
  const active = (step: StepInfo) => o.enabled && !replaced(step) && inWindow(o.window, step);
  o.reset?.();
  return {
    denoise(x, step) {
      if (step.k === 0) o.reset?.();
      if (replaced(step)) {
        return tidyPred(() => o.replace!.apply(o.models.model(x, timesteps(x.shape[0], step), cond), step));
      }
      if (!active(step)) {
        // Disabled everywhere: the neutral branch; disabled at this step only (window): the conditional model.
        const c = o.enabled ? cond : neutral;
        return tidyPred(() => o.models.model(x, timesteps(x.shape[0], step), c));
      }
      return tidyPred(() => {
        const out = forwardRepeated(o.models.model, x, step, both!, 2);
        return o.combine(predRows(out, 0, b), predRows(out, b, b), x, step);
      });
    },
    calls: (step) => ({ ...NO_CALLS, model: active(step) ? 2 : 1 }),
    dispose() {
      disposeCond(cond);
      disposeCond(other);
      disposeCond(both);
      o.extraDispose?.();
    },
  };
}

// ---------------------------------------------------------------- composition

/** Gradient guidance from two sources adds: ∇ log p(a|x) + ∇ log p(b|x) is the gradient of the product. */
export function sumCondFns(a: CondFn | undefined, b: CondFn | undefined): CondFn | undefined {
  if (!a) return b;
  if (!b) return a;
  return (x, step) => tf.tidy(() => tf.add(a(x, step), b(x, step)) as Tensor4D);
}

/** The inner strategy's x0 processing first, then the outer's. */
export function chainDenoisedFns(
  inner: DenoisedFn | undefined,
  outer: DenoisedFn | undefined,
): DenoisedFn | undefined {
  if (!inner) return outer;
  if (!outer) return inner;
  return (x0, step) => tf.tidy(() => outer(inner(x0, step), step));
}

/**
 * A wrapping strategy's binding: the base's denoiser and hooks, plus the wrapper's own condFn / denoisedFn and
 * calls. Disposing it disposes the base binding too.
 */
export function wrapSampling(
  base: GuidedSampling,
  extra: {
    condFn?: CondFn | undefined;
    denoisedFn?: DenoisedFn | undefined;
    calls?: (step: StepInfo) => Partial<ModelCalls>;
    dispose?: () => void;
  },
): GuidedSampling {
  const condFn = sumCondFns(base.condFn, extra.condFn);
  const denoisedFn = chainDenoisedFns(base.denoisedFn, extra.denoisedFn);
  return {
    denoise: base.denoise,
    ...(condFn ? { condFn } : {}),
    ...(denoisedFn ? { denoisedFn } : {}),
    ...(base.clipDenoised !== undefined ? { clipDenoised: base.clipDenoised } : {}),
    calls: (step) => addCalls(base.calls(step), extra.calls?.(step) ?? {}),
    dispose() {
      extra.dispose?.();
      base.dispose();
    },
  };
}

/** Default `base` of wrapping strategies: the plain conditional model. */
export const DEFAULT_BASE = { kind: "none" } as const;

// ---------------------------------------------------------------- gradient guidance (classifier, CLIP)

/** The parsed config of a gradient-guidance strategy: s ≥ 0 on the gradient, the wrapped `base`, the window. */
export interface GradientGuidanceConfig extends GuidanceWindow {
  kind: string;
  scale: number;
  base: { kind: string };
  /** The guide by zoo name (e.g. a snapshot noised-clip-500); omitted: the bag's default guide. */
  model?: string | undefined;
}

/** The `model` key of strategies that may name their guide (a zoo model name). */
export const guideModelField = {
  model: z
    .string()
    .regex(MODEL_NAME, "a zoo model name (letters, digits, '.', '_', '+', '-'), not a path")
    .optional(),
};

/** The strict schema of a gradient-guidance kind: scale s ≥ 0 (default `scaleDefault`), `base`, the window. */
export function gradientGuidanceSchema<K extends string>(
  kind: K,
  scaleDefault: number,
  nested: z.ZodType<{ kind: string }>,
) {
  return z
    .object({
      kind: z.literal(kind),
      scale: scaleSchema({ default: scaleDefault, min: 0 }),
      base: nested.default(DEFAULT_BASE),
      ...guideModelField,
      ...windowFields,
    })
    .strict()
    .superRefine(checkWindow);
}

/**
 * The bag a strategy builds with: when its config names a guide (`model`), that model's keys replace the
 * defaults, and it must provide every key the strategy takes from its guide (a classifier is no CLIP).
 */
export function withGuide(
  kind: string,
  config: { model?: unknown },
  models: GuidanceModels,
  keys: readonly (keyof GuidanceModels)[] | undefined,
): GuidanceModels {
  if (config.model === undefined) return models;
  if (!keys) throw new Error(`strategy '${kind}': model: this kind takes no guide model`);
  const name = String(config.model);
  if (!models.guide) {
    throw new Error(`strategy '${kind}': model: '${name}' needs models.guide (a zoo), which was not given`);
  }
  const provided = models.guide(name);
  const missing = keys.filter((k) => provided[k] === undefined);
  if (missing.length) {
    const has = Object.keys(provided).join(", ") || "nothing";
    throw new Error(
      `strategy '${kind}': model: '${name}' provides ${has}, not ${missing.join(", ")} (the guide this kind needs)`,
    );
  }
  return { ...models, ...provided };
}

/**
 * A gradient-guidance strategy: the base's binding plus condFn g = grad(x_t, t, target) inside the window (zero
 * outside), counted as one `counter` call. `prepare` computes the per-binding target once (labels, text
 * embeddings); if it throws, the base binding is disposed. s = 0 gives the base binding itself (no condFn).
 */
export function buildGradientGuidance<C extends GradientGuidanceConfig, T extends Tensor>(
  config: C,
  models: GuidanceModels,
  ctx: BuildContext,
  o: {
    counter: "classifier" | "clip";
    prepare: (prompts: readonly string[]) => T;
    grad: (x: Tensor4D, t: Tensor1D, target: T) => Tensor4D;
  },
): Strategy<C> {
  const base = ctx.build(config.base, models);
  return {
    config,
    bind: (prompts) => {
      const inner = base.bind(prompts);
      if (config.scale === 0) return inner;
      let target: T;
      try {
        target = o.prepare(prompts);
      } catch (e) {
        inner.dispose();
        throw e;
      }
      const condFn: CondFn = (x, step) =>
        inWindow(config, step)
          ? tf.tidy(() => o.grad(x, timesteps(x.shape[0], step), target))
          : tf.zerosLike(x);
      return wrapSampling(inner, {
        condFn,
        calls: (step) => ({ [o.counter]: inWindow(config, step) ? 1 : 0 }),
        dispose: () => target.dispose(),
      });
    },
  };
}

// ---------------------------------------------------------------- perturbed-model guidance (PAG, SEG, SLG)

/** The parsed config of a perturbed-model guide: cfg's s, the perturbation's scale w, its layers, the window. */
export interface PerturbedGuidanceConfig extends GuidanceWindow {
  kind: string;
  scale: number;
  perturbScale: number;
  layers: string[];
}

/** The keys every perturbed-model guide shares (spread into its schema). */
export const perturbedFields = (o: { scale: number; perturbScale: number; layers: string[] }) => ({
  /** cfg's s in GLIDE's convention (1 = no unconditional branch, the perturbed guide alone). */
  scale: scaleSchema({ default: o.scale, min: 0 }),
  /** w ≥ 0 on c − c_perturbed (0 = plain cfg). */
  perturbScale: scaleSchema({ default: o.perturbScale, min: 0 }),
  /** UNet block paths to perturb (e.g. "middle_block.1"; an error lists the valid ones). */
  layers: z.array(z.string().min(1)).min(1).default(o.layers),
  ...windowFields,
});

/**
 * The registry entry's parts every perturbed-model guide shares: its strength axis is w (`perturbScale`) at a fixed
 * s, it needs the perturbed network only when w ≠ 0, and s = 1, w = 0 is the conditional model.
 */
export function perturbedDefParts<C extends PerturbedGuidanceConfig>(): Pick<
  StrategyDef<C>,
  "strengthAxis" | "requires" | "neutral"
> {
  return {
    strengthAxis: "perturbScale",
    requires: (c) => (c.perturbScale === 0 ? ["model", "encode"] : ["model", "encode", "perturbed"]),
    neutral: (config) => ({ config: { ...config, scale: 1, perturbScale: 0 }, equals: "conditional" }),
  };
}

/** u + s·(c − u) + w·(c − c_p), dropping the terms whose branch is absent (u: s = 1; c_p: w = 0). */
export function perturbedCombine(
  c: Tensor4D,
  u: Tensor4D | undefined,
  cp: Tensor4D | undefined,
  s: number,
  w: number,
): Tensor4D {
  return tf.tidy(() => {
    const g = u ? cfgEps(c, u, s) : c;
    return cp ? (tf.add(g, tf.mul(w, tf.sub(c, cp))) as Tensor4D) : tf.clone(g);
  });
}

/**
 * The guides that compare the model with a perturbed copy of itself, as diffusers' PAG / SEG / SLG guiders combine
 * them (their non-original formulation, both terms on):
 *   g = u + s·(c − u) + w·(c − c_p)        (s = 1: g = c + w·(c − c_p), no unconditional call)
 * with c_p the conditional prediction of the perturbed network. Per guided step: the [c; u] batch when s ≠ 1
 * (else c alone) plus one perturbed forward when w ≠ 0, all counted as `model` calls; variance from c. The
 * perturbed network is built when the strategy is built, so bad layer names fail before sampling.
 */
export function buildPerturbedGuidance<C extends PerturbedGuidanceConfig>(
  config: C,
  models: GuidanceModels,
  perturbation: Perturbation,
): Strategy<C> {
  const perturbed = config.perturbScale !== 0 ? models.perturbed!(perturbation) : undefined;
  const cfgOn = config.scale !== 1;
  return {
    config,
    bind: (prompts) => {
      const b = prompts.length;
      const cond = encodeFor(config.kind, models, prompts);
      const other = cfgOn ? models.encode(unconditionalPrompts(models, b)) : undefined;
      const both = other ? concatCond([cond, other]) : undefined;
      const active = (step: StepInfo) => (cfgOn || perturbed !== undefined) && inWindow(config, step);
      return {
        denoise: (x, step) =>
          tidyPred(() => {
            const t = timesteps(x.shape[0], step);
            if (!active(step)) return models.model(x, t, cond);
            let c: Prediction;
            let u: Tensor4D | undefined;
            if (both) {
              const out = forwardRepeated(models.model, x, step, both, 2);
              c = predRows(out, 0, b);
              u = predRows(out, b, b).out;
            } else {
              c = models.model(x, t, cond);
            }
            const cp = perturbed?.(x, t, cond).out;
            return withOut(c, perturbedCombine(c.out, u, cp, config.scale, config.perturbScale));
          }),
        calls: (step) => ({
          ...NO_CALLS,
          model: active(step) ? (cfgOn ? 2 : 1) + (perturbed ? 1 : 0) : 1,
        }),
        dispose: () => {
          disposeCond(cond);
          disposeCond(other);
          disposeCond(both);
        },
      };
    },
  };
}
