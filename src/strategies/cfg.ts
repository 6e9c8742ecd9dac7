// Classifier-free guidance as in GLIDE (Nichol et al. 2021, arXiv 2112.10741, eq. 6; Ho & Salimans 2022):
//   eps_g = eps(x_t, ∅) + s·(eps(x_t, c) − eps(x_t, ∅))
// from ONE batched forward of [conditional; unconditional] on the same x_t, applied to eps only; the learned
// variance comes from the conditional half (the text2im notebook writes eps_g into both halves and keeps each
// half's own variance channels, and the sample is the first half).
// Scale convention: GLIDE's s, where s = 1 is the conditional model and s = 0 the unconditional one. Ho & Salimans
// write eps_g = (1 + w)·eps_c − w·eps_u and diffusers' `guidance_scale` is GLIDE's s, so w = s − 1 (diffusers'
// guidance_scale = s). At s = 1 the strategy makes the single conditional call.
import { z } from "zod";
import {
  cfgEps,
  checkWindow,
  pairGuided,
  scaleSchema,
  unconditionalPrompts,
  windowFields,
  withOut,
} from "./shared.ts";
import type { StrategyDef } from "./strategy.ts";

export const cfgSchema = z
  .object({
    kind: z.literal("cfg"),
    /** GLIDE's s (≥ 0); 1 = conditional model. GLIDE's notebooks use 3. */
    scale: scaleSchema({ default: 3, min: 0 }),
    ...windowFields,
  })
  .strict()
  .superRefine(checkWindow);
export type CfgConfig = z.infer<typeof cfgSchema>;

export const cfgStrategy: StrategyDef<CfgConfig> = {
  kind: "cfg",
  summary: "classifier-free guidance, eps_u + s·(eps_c − eps_u)",
  citation: "Nichol et al. 2021 (GLIDE) eq. 6; Ho & Salimans 2022",
  example: { kind: "cfg", scale: 3 },
  schema: () => cfgSchema,
  requires: () => ["model", "encode"],
  build: (config, models) => ({
    config,
    bind: (prompts) =>
      pairGuided({
        kind: "cfg",
        models,
        prompts,
        otherPrompts: unconditionalPrompts(models, prompts.length),
        enabled: config.scale !== 1,
        window: config,
        combine: (c, u) => withOut(c, cfgEps(c.out, u.out, config.scale)),
      }),
  }),
  neutral: (config) => ({ config: { ...config, scale: 1 }, equals: "conditional" }),
};
