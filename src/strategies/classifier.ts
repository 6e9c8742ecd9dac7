// Classifier guidance (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis", Algorithms 1–2;
// the paper's first baseline, GLIDE §3.1–3.2): a classifier p(y | x_t, t) trained on noised images steers sampling
// by its gradient,
//   g = s·∇_{x_t} log p(y | x_t, t)
//   DDPM: μ' = μ + Σ·g                      (condition_mean)
//   DDIM: eps' = eps − sqrt(1 − ᾱ_t)·g      (condition_score)
// The strategy supplies g as the samplers' `condFn` (they apply condition_mean / condition_score); the denoiser is
// the wrapped `base` strategy's (default: the conditional model, as guided-diffusion's class-conditional
// sampling). Prompts map to labels through models.classifierLabel. The classifier sees the original timestep.
// s = 0 gives no condFn at all (exactly the base); outside the guidance window the gradient is zero.
import type { z } from "zod";
import { tf } from "../core/engine.ts";
import { buildGradientGuidance, type GradientGuidanceConfig, gradientGuidanceSchema } from "./shared.ts";
import type { StrategyDef } from "./strategy.ts";

/** scale: s ≥ 0, multiplying ∇ log p(y|x_t) (guided-diffusion's classifier_scale); default 1. */
export const classifierSchema = (nested: z.ZodType<{ kind: string }>) =>
  gradientGuidanceSchema("classifier", 1, nested);
export interface ClassifierConfig extends GradientGuidanceConfig {
  kind: "classifier";
}

export const classifierStrategy: StrategyDef<ClassifierConfig> = {
  kind: "classifier",
  summary: "noised-classifier gradient s·∇ log p(y|x_t) on the mean (DDPM) or score (DDIM)",
  citation: "Dhariwal & Nichol 2021 (Diffusion Models Beat GANs) Alg. 1–2; GLIDE §3.1",
  example: { kind: "classifier", scale: 1 },
  guideKeys: ["classifier"],
  schema: classifierSchema,
  requires: (c) => (c.scale === 0 ? [] : ["classifier", "classifierLabel"]),
  build: (config, models, ctx) =>
    buildGradientGuidance(config, models, ctx, {
      counter: "classifier",
      prepare: (prompts) => {
        const labels = prompts.map((p) => {
          const label = models.classifierLabel!(p);
          if (!Number.isInteger(label) || label < 0) {
            throw new Error(`strategy 'classifier': prompt '${p}' maps to label ${label}, not a class index`);
          }
          return label;
        });
        return tf.tensor1d(labels, "int32");
      },
      grad: (x, t, y) => models.classifier!.condGrad(x, t, y, config.scale),
    }),
  neutral: (config) => ({ config: { ...config, scale: 0 }, equals: "base" }),
};
