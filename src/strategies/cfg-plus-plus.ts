// CFG++ (Chung et al. 2025, "CFG++: Manifold-constrained Classifier Free Guidance for Diffusion Models", ICLR,
// arXiv 2406.08070): the guided prediction denoises, but the renoising direction of the update uses the
// UNconditional one, which keeps samples on the data manifold and makes a small λ ∈ [0, 1] enough:
//   eps_λ = eps_u + λ·(eps_c − eps_u)
// The strategy hands the sampler eps_λ as the prediction and eps_u as its renoising prediction (Prediction.renoise);
// each sampler that declares `renoise` applies the paper's form of its own update, so nothing here names a sampler:
//   ddim (η = 0), Alg. 1:  x_{t−1} = sqrt(ᾱ_{t−1})·x0_λ + sqrt(1 − ᾱ_{t−1})·eps_u
//   euler, appendix (Karras Euler; the authors' euler_cfg++, ComfyUI's sample_euler_cfg_pp):
//                          x_{i+1} = D_λ + σ_{i+1}·(x_i − D_u)/σ_i
//   euler_ancestral, appendix (the authors' euler_a_cfg++ at η = 1, ComfyUI's sample_euler_ancestral_cfg_pp):
//                          x_{i+1} = D_λ + σ_down·(x_i − D_u)/σ_i + σ_up·z
//   dpmpp_2m, appendix (the authors' dpm++_2m_cfg++, ComfyUI's sample_dpmpp_2m_cfg_pp), h = log(σ_i/σ_{i+1}):
//                          x_{i+1} = e^{−h}·x_i + D_λ − e^{−h}·D_u + (1 − e^{−h})·(D_λ − D_u,{i−1})/(2r)
// with D = x − σ·eps in k-diffusion's σ-space (the multistep history keeps the unconditional D, as the reference
// does). Any other pairing is refused before sampling (`samplers` below). The x0 clamp is off, as in the reference
// code (it clamps neither D). λ = 0 is the unconditional model (one call); outside the guidance window a step is an
// ordinary conditional step. Variance from the conditional half.
import { z } from "zod";
import type { Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import { checkWindow, pairGuided, scaleSchema, unconditionalPrompts, windowFields } from "./shared.ts";
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

export const cfgPlusPlusStrategy: StrategyDef<CfgPlusPlusConfig> = {
  kind: "cfg++",
  summary: "CFG++: guided eps denoises, unconditional eps renoises",
  citation: "Chung et al. 2025 (CFG++: Manifold-constrained Classifier Free Guidance) Alg. 1 and appendix",
  example: { kind: "cfg++", scale: 0.6 },
  schema: () => cfgPlusPlusSchema,
  requires: () => ["model", "encode"],
  build: (config, models) => ({
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
        combine: (c, u) => ({
          out: tf.add(u.out, tf.mul(config.scale, tf.sub(c.out, u.out))) as Tensor4D,
          kind: c.kind,
          ...(c.varValues ? { varValues: c.varValues } : {}),
          renoise: u.out,
        }),
      });
      return { ...g, clipDenoised: false };
    },
  }),
  neutral: (config) => ({ config: { ...config, scale: 0 }, equals: "unconditional" }),
  renoises: true,
  // The samplers with the paper's renoising form (SamplerDef.renoise); the rest have none and are refused.
  samplers: [{ name: "ddim", eta: 0 }, { name: "euler" }, { name: "euler_ancestral" }, { name: "dpmpp_2m" }],
};
