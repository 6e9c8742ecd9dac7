// CLIP guidance as in GLIDE (Nichol et al. 2021, arXiv 2112.10741, §2.4 eq. 5–6; glide_text2im/clip/model_creation.py
// cond_fn): a CLIP trained on noised images replaces the classifier, with the gradient of the scaled similarity
//   g = s·∇_{x_t} [exp(logit_scale)·⟨z_image(x_t, t), z_text(c)⟩],   z = v / (‖v‖ + 1e-12)
//   DDPM: μ' = μ + Σ·g;  DDIM: eps' = eps − sqrt(1 − ᾱ_t)·g
// g is the samplers' `condFn`; the denoiser is the wrapped `base` (default: the conditional model, as GLIDE's
// CLIP-guided notebook; `base: {kind: "cfg"}` composes both). Text embeddings come from models.clipText (CLIP has
// its own tokenizer) and are computed once per binding. s = 0 gives no condFn (exactly the base).
import { z } from "zod";
import type { Tensor2D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import type { CondFn } from "../core/types.ts";
import {
  checkWindow,
  DEFAULT_BASE,
  type GuidanceWindow,
  inWindow,
  scaleSchema,
  timesteps,
  windowFields,
  wrapSampling,
} from "./shared.ts";
import type { StrategyDef } from "./strategy.ts";

export function clipSchema(nested: z.ZodType<{ kind: string }>) {
  return z
    .object({
      kind: z.literal("clip"),
      /** s ≥ 0 (GLIDE's notebook: 3 for the released noised CLIP). */
      scale: scaleSchema({ default: 3, min: 0 }),
      base: nested.default(DEFAULT_BASE),
      ...windowFields,
    })
    .strict()
    .superRefine(checkWindow);
}
export interface ClipConfig extends GuidanceWindow {
  kind: "clip";
  scale: number;
  base: { kind: string };
}

export const clipStrategy: StrategyDef<ClipConfig> = {
  kind: "clip",
  summary: "noised-CLIP gradient s·∇ exp(τ)⟨z_image(x_t,t), z_text⟩",
  citation: "Nichol et al. 2021 (GLIDE) §2.4",
  example: { kind: "clip", scale: 3 },
  schema: clipSchema,
  requires: (c) => (c.scale === 0 ? [] : ["clip", "clipText"]),
  build: (config, models, ctx) => {
    const base = ctx.build(config.base, models);
    return {
      config,
      bind: (prompts) => {
        const inner = base.bind(prompts);
        if (config.scale === 0) return inner;
        const clip = models.clip!;
        let zText: Tensor2D;
        try {
          zText = models.clipText!(prompts);
        } catch (e) {
          inner.dispose();
          throw e;
        }
        const condFn: CondFn = (x, step) =>
          inWindow(config, step)
            ? tf.tidy(() => clip.condGrad(x, timesteps(x.shape[0], step), zText, config.scale))
            : tf.zerosLike(x);
        return wrapSampling(inner, {
          condFn,
          calls: (step) => ({ clip: inWindow(config, step) ? 1 : 0 }),
          dispose: () => zText.dispose(),
        });
      },
    };
  },
  neutral: (config) => ({ config: { ...config, scale: 0 }, equals: "base" }),
};
