// APG-mix: classifier-free guidance for the first steps, adaptive projected guidance after them (diffusers'
// AdaptiveProjectedMixGuidance, written for HunyuanImage-2.1; APG is Sadat et al. 2025, arXiv 2410.02416, Alg. 1).
// With D the predicted x0 and Δ_k = D_c − D_u at loop step k:
//   k ≤ K (cfg phase):  D_g = D_c + (s − 1)·Δ_k,                     momentum buffer m_k = Δ_k + β·m_{k−1}
//   k > K (apg phase):  m_k = Δ_k + β·m_{k−1};  D_g = apg(D_c, m_k) with scale s_apg, η and threshold r (apg.ts)
// The early steps lay out the composition with plain cfg; apg's projection then keeps the later, detail-forming
// steps from oversaturating. The momentum buffer runs through both phases, as in diffusers. Like `apg` it works in
// x0 space (diffusers' guider combines whatever the model outputs); scales in GLIDE's convention (diffusers'
// use_original_formulation with guidance_scale = s − 1). A phase whose scale is 1 returns D_c; both scales 1 is the
// conditional model (one call). Variance from the conditional half.
import { z } from "zod";
import type { Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import { apgCombine, predictedX0 } from "./apg.ts";
import {
  checkWindow,
  pairGuided,
  scaleSchema,
  unconditionalPrompts,
  windowFields,
  withOut,
} from "./shared.ts";
import type { StrategyDef } from "./strategy.ts";

export const apgMixSchema = z
  .object({
    kind: z.literal("apg-mix"),
    /** s of the cfg phase (GLIDE's convention): 1 = conditional model. */
    scale: scaleSchema({ default: 3, min: 0 }),
    /** s of the apg phase. */
    apgScale: scaleSchema({ default: 6, min: 0 }),
    /** K: loop steps k ≤ K use cfg, later ones apg (diffusers' adaptive_projected_guidance_start_step, default 5). */
    apgStartStep: z.number().int().min(0).default(5),
    /** η: weight of the parallel component in the apg phase. */
    eta: z.number().min(0).max(1).default(0),
    /** r: per-sample norm threshold of the apg update (0 = none). */
    normThreshold: z.number().min(0).default(0),
    /** β ∈ (−1, 1): momentum of the update buffer (0 = none). */
    momentum: z.number().gt(-1).lt(1).default(-0.5),
    ...windowFields,
  })
  .strict()
  .superRefine(checkWindow);
export type ApgMixConfig = z.infer<typeof apgMixSchema>;

/**
 * The per-run state of APG-mix over x0 predictions: `step(dCond, dUncond, k)` returns D_g and advances the
 * momentum buffer. The caller owns the result; `dispose` frees the buffer.
 */
export function apgMixCombiner(o: Omit<ApgMixConfig, "kind" | "tMin" | "tMax">) {
  let buffer: Tensor4D | undefined;
  return {
    step(dCond: Tensor4D, dUncond: Tensor4D, k: number): Tensor4D {
      return tf.tidy(() => {
        const delta = tf.sub(dCond, dUncond) as Tensor4D;
        const running = buffer ? (tf.add(delta, tf.mul(o.momentum, buffer)) as Tensor4D) : delta;
        const kept = tf.keep(tf.clone(running));
        buffer?.dispose();
        buffer = kept;
        if (k <= o.apgStartStep) {
          return o.scale === 1 ? tf.clone(dCond) : (tf.add(dCond, tf.mul(o.scale - 1, delta)) as Tensor4D);
        }
        return o.apgScale === 1 ? tf.clone(dCond) : apgCombine(dCond, running, { ...o, scale: o.apgScale });
      });
    },
    dispose() {
      buffer?.dispose();
      buffer = undefined;
    },
  };
}

export const apgMixStrategy: StrategyDef<ApgMixConfig> = {
  kind: "apg-mix",
  summary: "cfg for the first K steps, then adaptive projected guidance (momentum carried through)",
  citation: "diffusers' AdaptiveProjectedMixGuidance (HunyuanImage-2.1); APG: Sadat et al. 2025 Alg. 1",
  example: { kind: "apg-mix", scale: 3, apgScale: 6, apgStartStep: 1, momentum: -0.5 },
  schema: () => apgMixSchema,
  requires: () => ["model", "encode", "diffusion"],
  build: (config, models) => {
    const d = models.diffusion!;
    return {
      config,
      bind: (prompts) => {
        let combiner = apgMixCombiner(config);
        const reset = () => {
          combiner.dispose();
          combiner = apgMixCombiner(config);
        };
        return pairGuided({
          kind: "apg-mix",
          models,
          prompts,
          otherPrompts: unconditionalPrompts(models, prompts.length),
          enabled: config.scale !== 1 || config.apgScale !== 1,
          window: config,
          reset,
          extraDispose: () => combiner.dispose(),
          combine: (c, u, x, step) => {
            const dCond = predictedX0(d, c, x, step.index);
            return withOut(c, combiner.step(dCond, predictedX0(d, u, x, step.index), step.k), "x0");
          },
        });
      },
    };
  },
  neutral: (config) => ({ config: { ...config, scale: 1, apgScale: 1 }, equals: "conditional" }),
};
