// Smoothed energy guidance, SEG (Hong 2024, "Smoothed Energy Guidance: Guiding Diffusion Models with Reduced Energy
// Curvature of Attention", NeurIPS, arXiv 2408.00760): the model is guided away from a copy of itself whose
// attention queries are blurred by a 2-D Gaussian of σ over the image grid in chosen layers (σ ≥ 9999: every query
// replaced by the mean query, the paper's σ → ∞), which flattens the attention's energy landscape:
//   g = u + s·(c − u) + w·(c − c_seg)        (s = 1: c + w·(c − c_seg), no unconditional call)
// as diffusers' SmoothedEnergyGuidance combines them; the blur is nets/perturb.ts's smoothed-queries (the
// author's SEG-SDXL kernel). Defaults as diffusers' guider: σ = ∞, w = 3 here (diffusers 2.8), middle attention.
// s = 1 and w = 0 is the conditional model (one call); variance from the conditional prediction.
import { z } from "zod";
import { SEG_INFINITE_SIGMA } from "../nets/perturb.ts";
import { buildPerturbedGuidance, checkWindow, perturbedDefParts, perturbedFields } from "./shared.ts";
import type { StrategyDef } from "./strategy.ts";

export const segSchema = z
  .object({
    kind: z.literal("seg"),
    ...perturbedFields({ scale: 1, perturbScale: 3, layers: ["middle_block.1"] }),
    /** σ of the query blur in tokens (≥ 9999: the mean query). */
    sigma: z.number().positive().default(SEG_INFINITE_SIGMA),
  })
  .strict()
  .superRefine(checkWindow);
export type SegConfig = z.infer<typeof segSchema>;

export const segStrategy: StrategyDef<SegConfig> = {
  kind: "seg",
  summary: "smoothed energy guidance: away from the model with Gaussian-blurred attention queries",
  citation: "Hong 2024 (Smoothed Energy Guidance)",
  example: { kind: "seg", scale: 1, perturbScale: 3, sigma: 2 },
  schema: () => segSchema,
  ...perturbedDefParts(),
  build: (config, models) =>
    buildPerturbedGuidance(config, models, {
      op: "smoothed-queries",
      layers: config.layers,
      sigma: config.sigma,
    }),
};
