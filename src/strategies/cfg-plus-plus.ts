// CFG++ (Chung et al. 2025, "CFG++: Manifold-constrained Classifier Free Guidance for Diffusion Models", ICLR,
// arXiv 2406.08070, Algorithm 1 for DDIM): the guided eps denoises, but the renoising direction of the DDIM
// update uses the UNconditional eps, which keeps samples on the data manifold and makes a small λ ∈ [0, 1]
// enough:
//   eps_λ   = eps_u + λ·(eps_c − eps_u)
//   x0_λ    = (x_t − sqrt(1 − ᾱ_t)·eps_λ) / sqrt(ᾱ_t)
//   x_{t−1} = sqrt(ᾱ_{t−1})·x0_λ + sqrt(1 − ᾱ_{t−1})·eps_u
// The samplers' DDIM step (η = 0) renoises with the eps implied by the predicted x0, so this strategy hands it the
// one eps* for which that step lands on the CFG++ update (linear in eps*, solved in float64):
//   eps* = eps_λ + sqrt(1 − ᾱ_{t−1})·(eps_u − eps_λ) / A,   A = sqrt(1 − ᾱ_{t−1}) − sqrt(ᾱ_{t−1}(1 − ᾱ_t)/ᾱ_t) < 0
// Defined for the ddim sampler at η = 0 only (declared below, checked before sampling); it turns the sampler's x0 clamp off (the x0 the sampler sees is a transfer
// quantity, clamping it would change the update). λ = 0 is the unconditional model (one call); outside the
// guidance window a step is an ordinary conditional DDIM step. Variance from the conditional half.
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
import type { GuidedSampling, StrategyDef } from "./strategy.ts";

export const cfgPlusPlusSchema = z
  .object({
    kind: z.literal("cfg++"),
    /** λ ∈ [0, 1]: 0 = unconditional, 1 = conditional denoising (with unconditional renoising). */
    scale: scaleSchema({ default: 0.6, min: 0, max: 1 }),
    ...windowFields,
  })
  .strict()
  .superRefine(checkWindow);
export type CfgPlusPlusConfig = z.infer<typeof cfgPlusPlusSchema>;

/** The coefficient sqrt(1 − ᾱ_{t−1}) / A of eps* = eps_λ + coef·(eps_u − eps_λ), from float64 tables. */
export function cfgPlusPlusCoef(alphaBar: number, alphaBarPrev: number): number {
  const a = Math.sqrt(1 - alphaBarPrev) - Math.sqrt((alphaBarPrev * (1 - alphaBar)) / alphaBar);
  return Math.sqrt(1 - alphaBarPrev) / a;
}

export const cfgPlusPlusStrategy: StrategyDef<CfgPlusPlusConfig> = {
  kind: "cfg++",
  summary: "CFG++: guided eps denoises, unconditional eps renoises (DDIM)",
  citation: "Chung et al. 2025 (CFG++: Manifold-constrained Classifier Free Guidance) Alg. 1",
  example: { kind: "cfg++", scale: 0.6 },
  schema: () => cfgPlusPlusSchema,
  requires: () => ["model", "encode", "diffusion"],
  build: (config, models) => {
    const d = models.diffusion!;
    return {
      config,
      bind: (prompts): GuidedSampling => {
        const g = pairGuided({
          kind: "cfg++",
          models,
          prompts,
          otherPrompts: unconditionalPrompts(models, prompts.length),
          enabled: config.scale !== 0,
          neutralBranch: "other",
          window: config,
          combine: (c, u, _x, step: StepInfo) => {
            const coef = cfgPlusPlusCoef(d.alphasCumprod[step.index]!, d.alphasCumprodPrev[step.index]!);
            const epsL = tf.add(u.out, tf.mul(config.scale, tf.sub(c.out, u.out))) as Tensor4D;
            return withOut(c, tf.add(epsL, tf.mul(coef, tf.sub(u.out, epsL))) as Tensor4D);
          },
        });
        return { ...g, clipDenoised: false };
      },
    };
  },
  neutral: (config) => ({ config: { ...config, scale: 0 }, equals: "unconditional" }),
  // The transfer eps above is solved for the DDIM η = 0 update; the paper's Euler / DPM++ forms renoise with the
  // unconditional D, which a σ-space sampler does not see through a Denoiser, so they are not offered.
  samplers: [{ name: "ddim", eta: 0 }],
};
