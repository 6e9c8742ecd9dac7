// Skip-layer guidance, SLG (Stability AI's SD 3.5 sampler; the same idea as spatiotemporal skip guidance, STG,
// Hyung et al. 2024, "Spatiotemporal Skip Guidance for Enhanced Video Diffusion Sampling", arXiv 2411.18664): the
// model is guided away from a copy of itself with chosen blocks skipped (each returns its input):
//   g = u + s·(c − u) + w·(c − c_skip)       (s = 1: c + w·(c − c_skip), no unconditional call)
// as diffusers' SkipLayerGuidance combines them (skip_layer_guidance_scale = w). In this UNet a skippable block keeps
// its input's shape: attention blocks and ResBlocks without resampling or channel change (nets/perturb.ts).
// Default: the middle block's attention. s = 1 and w = 0 is the conditional model (one call); variance from c.
import { z } from "zod";
import { buildPerturbedGuidance, checkWindow, perturbedDefParts, perturbedFields } from "./shared.ts";
import type { StrategyDef } from "./strategy.ts";

export const slgSchema = z
  .object({
    kind: z.literal("slg"),
    ...perturbedFields({ scale: 3, perturbScale: 2.8, layers: ["middle_block.1"] }),
  })
  .strict()
  .superRefine(checkWindow);
export type SlgConfig = z.infer<typeof slgSchema>;

export const slgStrategy: StrategyDef<SlgConfig> = {
  kind: "slg",
  summary: "skip-layer guidance: cfg plus a push away from the model with chosen blocks skipped",
  citation: "SD 3.5 skip-layer guidance; Hyung et al. 2024 (STG)",
  example: { kind: "slg", scale: 3, perturbScale: 2.8 },
  schema: () => slgSchema,
  ...perturbedDefParts(),
  build: (config, models) => buildPerturbedGuidance(config, models, { op: "skip", layers: config.layers }),
};
