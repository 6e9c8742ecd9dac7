// Negative prompts: classifier-free guidance whose second branch is a negative prompt instead of the empty one,
// steering away from it (popularised by Stable Diffusion front ends; analysed by Ban et al. 2024, "Understanding
// the Impact of Negative Prompts: When and How Do They Take Effect?"):
//   eps_g = eps(x_t, c_neg) + s·(eps(x_t, c) − eps(x_t, c_neg))
// One batched forward of [c; c_neg]; variance from the conditional half; s = 1 is the conditional model.
import { z } from "zod";
import { cfgEps, checkWindow, pairGuided, scaleSchema, windowFields, withOut } from "./shared.ts";
import type { StrategyDef } from "./strategy.ts";

export const negativeSchema = z
  .object({
    kind: z.literal("negative"),
    scale: scaleSchema({ default: 3, min: 0 }),
    /** The prompt to steer away from, for every sample of the batch. */
    negativePrompt: z.string(),
    ...windowFields,
  })
  .strict()
  .superRefine(checkWindow);
export type NegativeConfig = z.infer<typeof negativeSchema>;

export const negativeStrategy: StrategyDef<NegativeConfig> = {
  kind: "negative",
  summary: "classifier-free guidance away from a negative prompt",
  citation: "Ban et al. 2024 (negative prompts); Ho & Salimans 2022",
  example: { kind: "negative", scale: 3, negativePrompt: "a blue square" },
  schema: () => negativeSchema,
  requires: () => ["model", "encode"],
  build: (config, models) => ({
    config,
    bind: (prompts) =>
      pairGuided({
        kind: "negative",
        models,
        prompts,
        otherPrompts: Array<string>(prompts.length).fill(config.negativePrompt),
        enabled: config.scale !== 1,
        window: config,
        combine: (c, n) => withOut(c, cfgEps(c.out, n.out, config.scale)),
      }),
  }),
  neutral: (config) => ({ config: { ...config, scale: 1 }, equals: "conditional" }),
};
