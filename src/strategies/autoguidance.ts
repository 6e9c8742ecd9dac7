// Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself", NeurIPS,
// arXiv 2406.02507, eq. 2 with the weak model in place of the unconditional one): guide the model away from a
// weaker version of itself (fewer training steps and/or less capacity), conditioned on the same prompt:
//   eps_g = eps_weak(x_t, c) + s·(eps(x_t, c) − eps_weak(x_t, c))
// Two networks, so two calls per step (they cannot share a batch); s = 1 is the main model alone (one call).
// Variance from the main model. With `dropLayers` the weak model is the main one with those blocks skipped
// (nets/perturb.ts; the layer-dropout variant of the weak model, needing no second checkpoint); its forwards
// then count as `model` calls, being the same network.
import { z } from "zod";
import type { StepInfo } from "../core/types.ts";
import {
  cfgEps,
  checkWindow,
  disposeCond,
  encodeFor,
  inWindow,
  NO_CALLS,
  scaleSchema,
  tidyPred,
  timesteps,
  windowFields,
  withOut,
} from "./shared.ts";
import type { StrategyDef } from "./strategy.ts";

export const autoguidanceSchema = z
  .object({
    kind: z.literal("autoguidance"),
    /** The paper's w (its scale convention is GLIDE's): 1 = main model alone. */
    scale: scaleSchema({ default: 2, min: 0 }),
    /** Make the weak model by skipping these UNet blocks of the main one (e.g. ["middle_block.1"]). */
    dropLayers: z.array(z.string().min(1)).min(1).optional(),
    ...windowFields,
  })
  .strict()
  .superRefine(checkWindow);
export type AutoguidanceConfig = z.infer<typeof autoguidanceSchema>;

export const autoguidanceStrategy: StrategyDef<AutoguidanceConfig> = {
  kind: "autoguidance",
  summary: "guide the model with a weaker version of itself, eps_w + s·(eps − eps_w)",
  citation: "Karras et al. 2024 (Guiding a Diffusion Model with a Bad Version of Itself) eq. 2",
  example: { kind: "autoguidance", scale: 2 },
  schema: () => autoguidanceSchema,
  requires: (c) =>
    c.scale === 1 ? ["model", "encode"] : ["model", "encode", c.dropLayers ? "perturbed" : "weak"],
  build: (config, models) => {
    const dropped = config.dropLayers !== undefined && config.scale !== 1;
    const weakModel = dropped ? models.perturbed!({ op: "skip", layers: config.dropLayers! }) : models.weak;
    return {
      config,
      bind: (prompts) => {
        const cond = encodeFor("autoguidance", models, prompts);
        const active = (step: StepInfo) => config.scale !== 1 && inWindow(config, step);
        return {
          denoise: (x, step) =>
            tidyPred(() => {
              const t = timesteps(x.shape[0], step);
              const main = models.model(x, t, cond);
              if (!active(step)) return main;
              const weak = weakModel!(x, t, cond);
              return withOut(main, cfgEps(main.out, weak.out, config.scale));
            }),
          calls: (step) => {
            const extra = active(step) ? 1 : 0;
            return { ...NO_CALLS, model: 1 + (dropped ? extra : 0), weak: dropped ? 0 : extra };
          },
          dispose: () => disposeCond(cond),
        };
      },
    };
  },
  neutral: (config) => ({ config: { ...config, scale: 1 }, equals: "conditional" }),
};
