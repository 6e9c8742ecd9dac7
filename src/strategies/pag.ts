// Perturbed-attention guidance, PAG (Ahn et al. 2024, "Self-Rectifying Diffusion Sampling with Perturbed-Attention
// Guidance", ECCV, arXiv 2403.17377): the model is guided away from a copy of itself whose self-attention map is
// the identity in chosen layers, which keeps each token's appearance and removes the structure attention builds:
//   g = u + s·(c − u) + w·(c − c_pag)        (s = 1: the paper's c + w·(c − c_pag), no unconditional call)
// as diffusers' PerturbedAttentionGuidance combines them. What identity attention means in GLIDE's UNet, whose
// text keys share the softmax with the image tokens, is defined in nets/perturb.ts (the image-to-image map
// becomes the identity; the text columns keep their weights). Default layer: the middle block's attention
// (diffusers' PAG default is SD's "mid" block). s = 1 and w = 0 is the conditional model (one call); variance
// from the conditional prediction.
import { z } from "zod";
import { buildPerturbedGuidance, checkWindow, perturbedDefParts, perturbedFields } from "./shared.ts";
import type { StrategyDef } from "./strategy.ts";

export const pagSchema = z
  .object({
    kind: z.literal("pag"),
    ...perturbedFields({ scale: 1, perturbScale: 3, layers: ["middle_block.1"] }),
  })
  .strict()
  .superRefine(checkWindow);
export type PagConfig = z.infer<typeof pagSchema>;

export const pagStrategy: StrategyDef<PagConfig> = {
  kind: "pag",
  summary: "perturbed-attention guidance: away from the model with identity self-attention in chosen layers",
  citation: "Ahn et al. 2024 (Self-Rectifying Diffusion Sampling with Perturbed-Attention Guidance)",
  example: { kind: "pag", scale: 1, perturbScale: 3 },
  schema: () => pagSchema,
  ...perturbedDefParts(),
  build: (config, models) =>
    buildPerturbedGuidance(config, models, { op: "identity-attention", layers: config.layers }),
};
