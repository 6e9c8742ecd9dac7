// CLIP guidance as in GLIDE (Nichol et al. 2021, arXiv 2112.10741, §2.4 eq. 5–6; glide_text2im/clip/model_creation.py
// cond_fn): a CLIP trained on noised images replaces the classifier, with the gradient of the scaled similarity
//   g = s·∇_{x_t} [exp(logit_scale)·⟨z_image(x_t, t), z_text(c)⟩],   z = v / (‖v‖ + 1e-12)
//   DDPM: μ' = μ + Σ·g;  DDIM: eps' = eps − sqrt(1 − ᾱ_t)·g
// g is the samplers' `condFn`; the denoiser is the wrapped `base` (default: the conditional model, as GLIDE's
// CLIP-guided notebook; `base: {kind: "cfg"}` composes both). Text embeddings come from models.clipText (CLIP has
// its own tokenizer) and are computed once per binding. s = 0 gives no condFn (exactly the base).
import type { z } from "zod";
import { buildGradientGuidance, type GradientGuidanceConfig, gradientGuidanceSchema } from "./shared.ts";
import type { StrategyDef } from "./strategy.ts";

/** scale: s ≥ 0 (GLIDE's notebook: 3 for the released noised CLIP); default 3. */
export const clipSchema = (nested: z.ZodType<{ kind: string }>) => gradientGuidanceSchema("clip", 3, nested);
export interface ClipConfig extends GradientGuidanceConfig {
  kind: "clip";
}

export const clipStrategy: StrategyDef<ClipConfig> = {
  kind: "clip",
  summary: "noised-CLIP gradient s·∇ exp(τ)⟨z_image(x_t,t), z_text⟩",
  citation: "Nichol et al. 2021 (GLIDE) §2.4",
  example: { kind: "clip", scale: 3 },
  guideKeys: ["clip", "clipText"],
  schema: clipSchema,
  requires: (c) => (c.scale === 0 ? [] : ["clip", "clipText"]),
  build: (config, models, ctx) =>
    buildGradientGuidance(config, models, ctx, {
      counter: "clip",
      prepare: (prompts) => models.clipText!(prompts),
      grad: (x, t, zText) => models.clip!.condGrad(x, t, zText, config.scale),
    }),
  neutral: (config) => ({ config: { ...config, scale: 0 }, equals: "base" }),
};
