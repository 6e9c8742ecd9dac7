// CFG-Zero* (Fan et al. 2025, "CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching Models",
// arXiv 2503.18886, §4: the optimised scale s*, and zero-init, §4.2). Two changes to classifier-free guidance:
//   optimised scale  α = ⟨c, u⟩ / (‖u‖² + 1e−8)          (per sample, over H, W, C; c, u the model outputs)
//   guided           g = α·u + s·(c − α·u)              (= (1 − s)·α·u + s·c, the paper's (1 − ω)·s*·v_u + ω·v_c)
//   zero-init        g = 0 at the first `zeroInitSteps` steps (k < K), whatever the scale
// α projects the unconditional prediction onto the conditional one's direction, so that the extrapolation starts
// from the best-matching multiple of u. The paper derives both for flow matching, where a zero velocity leaves the
// sample as it is; here the output is zeroed in the model's own parameterisation as diffusers'
// ClassifierFreeZeroStarGuidance does (for eps: x0 = x_t/√ᾱ, clamped by the sampler; for v: x0 = √ᾱ·x_t). A zeroed
// step still makes the one conditional call, for the learned variance. s in GLIDE's convention (= diffusers'
// guidance_scale): s = 1 with K = 0 is the conditional model (one call); variance from the conditional half.
import { z } from "zod";
import type { Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import type { StepInfo } from "../core/types.ts";
import {
  checkWindow,
  pairGuided,
  scaleSchema,
  unconditionalPrompts,
  windowFields,
  withOut,
} from "./shared.ts";
import type { StrategyDef } from "./strategy.ts";

export const cfgZeroStarSchema = z
  .object({
    kind: z.literal("cfg-zero-star"),
    /** s in GLIDE's convention (the paper's ω): 1 = conditional model. */
    scale: scaleSchema({ default: 3, min: 0 }),
    /** K: the first K steps output zero (the paper: the first ~4% of steps; diffusers' default 1). */
    zeroInitSteps: z.number().int().min(0).default(1),
    ...windowFields,
  })
  .strict()
  .superRefine(checkWindow);
export type CfgZeroStarConfig = z.infer<typeof cfgZeroStarSchema>;

/** The paper's s* = ⟨c, u⟩ / (‖u‖² + 1e−8) per sample, shaped [B, 1, 1, 1] (the 1e−8 as diffusers' cfg_zero_star_scale). */
export function cfgZeroStarAlpha(c: Tensor4D, u: Tensor4D): Tensor4D {
  return tf.tidy(
    () =>
      tf.div(
        tf.sum(tf.mul(c, u), [1, 2, 3], true),
        tf.add(tf.sum(tf.square(u), [1, 2, 3], true), 1e-8),
      ) as Tensor4D,
  );
}

/** g = α·u + s·(c − α·u), the paper's (1 − ω)·s*·v_u + ω·v_c (§4). */
export function cfgZeroStarCombine(c: Tensor4D, u: Tensor4D, s: number): Tensor4D {
  return tf.tidy(() => {
    const scaled = tf.mul(u, cfgZeroStarAlpha(c, u));
    return tf.add(scaled, tf.mul(s, tf.sub(c, scaled))) as Tensor4D;
  });
}

export const cfgZeroStarStrategy: StrategyDef<CfgZeroStarConfig> = {
  kind: "cfg-zero-star",
  summary: "cfg from the optimally scaled unconditional prediction α·u, α = ⟨c,u⟩/‖u‖², first K steps zeroed",
  citation: "Fan et al. 2025 (CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching Models) §4",
  example: { kind: "cfg-zero-star", scale: 3, zeroInitSteps: 1 },
  schema: () => cfgZeroStarSchema,
  requires: () => ["model", "encode"],
  build: (config, models) => ({
    config,
    bind: (prompts) =>
      pairGuided({
        kind: "cfg-zero-star",
        models,
        prompts,
        otherPrompts: unconditionalPrompts(models, prompts.length),
        enabled: config.scale !== 1,
        window: config,
        replace: {
          at: (step: StepInfo) => step.k < config.zeroInitSteps,
          apply: (c) => withOut(c, tf.zerosLike(c.out)),
        },
        combine: (c, u) => withOut(c, cfgZeroStarCombine(c.out, u.out, config.scale)),
      }),
  }),
  neutral: (config) => ({ config: { ...config, scale: 1, zeroInitSteps: 0 }, equals: "conditional" }),
};
