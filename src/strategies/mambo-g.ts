// Magnitude-aware guidance, MAMBO-G (Zhu et al. 2025, "MAMBO-G: Magnitude-Aware Mitigation for Boosted
// Guidance", ICML 2026, arXiv 2508.03442; diffusers' MagnitudeAwareGuidance is the authors' implementation, "merged
// into the Diffusers library" per the paper). The guidance scale is damped when the guidance update is large
// relative to the unconditional prediction:
//   r   = ‖c − u‖ / ‖u‖                     (per sample, over H, W, C)
//   s_r = 1 + (s − 1)·exp(−α·r)             (the paper's w(r_t) = 1 + (w_max − 1)·exp(−α·r_t))
//   g   = u + s_r·(c − u)
// s in GLIDE's convention (= diffusers' guidance_scale, the paper's w_max): s = 1 is the conditional model (one
// call); α = 0 is plain cfg. Variance from the conditional half. The paper derives it for velocity prediction;
// here r is taken on the model's own output (eps for GLIDE and guided-diffusion, v for the zoo), as diffusers does.
import { z } from "zod";
import type { Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import {
  checkWindow,
  pairGuided,
  scaleSchema,
  unconditionalPrompts,
  windowFields,
  withOut,
} from "./shared.ts";
import type { StrategyDef } from "./strategy.ts";

export const mamboGSchema = z
  .object({
    kind: z.literal("mambo-g"),
    /** s in GLIDE's convention (the paper's w_max): 1 = conditional model. */
    scale: scaleSchema({ default: 3, min: 0 }),
    /** α ≥ 0: how hard a large update damps the scale (diffusers' default 8; 0 = plain cfg). */
    alpha: z.number().min(0).default(8),
    ...windowFields,
  })
  .strict()
  .superRefine(checkWindow);
export type MamboGConfig = z.infer<typeof mamboGSchema>;

const norm = (v: Tensor4D) => tf.sqrt(tf.sum(tf.square(v), [1, 2, 3], true)) as Tensor4D;

/** g = u + (1 + (s − 1)·exp(−α·‖c − u‖/‖u‖))·(c − u). */
export function mamboGCombine(c: Tensor4D, u: Tensor4D, s: number, alpha: number): Tensor4D {
  return tf.tidy(() => {
    const diff = tf.sub(c, u) as Tensor4D;
    const ratio = tf.div(norm(diff), norm(u));
    const scale = tf.add(1, tf.mul(s - 1, tf.exp(tf.mul(-alpha, ratio))));
    return tf.add(u, tf.mul(scale, diff)) as Tensor4D;
  });
}

export const mamboGStrategy: StrategyDef<MamboGConfig> = {
  kind: "mambo-g",
  summary: "cfg whose scale is damped by exp(−α‖c − u‖/‖u‖) when the update is large",
  citation: "Zhu et al. 2025 (MAMBO-G: Magnitude-Aware Mitigation for Boosted Guidance), w(r_t)",
  example: { kind: "mambo-g", scale: 3, alpha: 8 },
  schema: () => mamboGSchema,
  requires: () => ["model", "encode"],
  build: (config, models) => ({
    config,
    bind: (prompts) =>
      pairGuided({
        kind: "mambo-g",
        models,
        prompts,
        otherPrompts: unconditionalPrompts(models, prompts.length),
        enabled: config.scale !== 1,
        window: config,
        combine: (c, u) => withOut(c, mamboGCombine(c.out, u.out, config.scale, config.alpha)),
      }),
  }),
  neutral: (config) => ({ config: { ...config, scale: 1 }, equals: "conditional" }),
};
