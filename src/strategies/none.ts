// No guidance: the conditional model p(x | c) as trained ("none"), or the same network given the unconditional
// prompt ("unconditional", p(x) when the model was trained with caption dropout, Ho & Salimans 2022).
//   none:          eps = eps(x_t, c)
//   unconditional: eps = eps(x_t, ∅)
// One model call per step. They are the references the other strategies reduce to at their neutral settings.
import { z } from "zod";
import { disposeCond, encodeFor, NO_CALLS, tidyPred, timesteps, unconditionalPrompts } from "./shared.ts";
import type { GuidanceModels, GuidedSampling, StrategyDef } from "./strategy.ts";

function plain(kind: string, models: GuidanceModels, prompts: readonly string[]): GuidedSampling {
  const cond = encodeFor(kind, models, prompts);
  return {
    denoise: (x, step) => tidyPred(() => models.model(x, timesteps(x.shape[0], step), cond)),
    calls: () => ({ ...NO_CALLS, model: 1 }),
    dispose: () => disposeCond(cond),
  };
}

export interface NoneConfig {
  kind: "none";
}

export const noneStrategy: StrategyDef<NoneConfig> = {
  kind: "none",
  summary: "conditional model, no guidance",
  citation: "Ho et al. 2020 (DDPM); the conditional model as trained",
  example: { kind: "none" },
  schema: () => z.object({ kind: z.literal("none") }).strict(),
  requires: () => ["model", "encode"],
  build: (config, models) => ({ config, bind: (prompts) => plain("none", models, prompts) }),
  neutral: (config) => ({ config, equals: "conditional" }),
};

export interface UnconditionalConfig {
  kind: "unconditional";
}

export const unconditionalStrategy: StrategyDef<UnconditionalConfig> = {
  kind: "unconditional",
  summary: "the model given the unconditional (empty) prompt",
  citation: "Ho & Salimans 2022 (the unconditional branch of classifier-free guidance)",
  example: { kind: "unconditional" },
  schema: () => z.object({ kind: z.literal("unconditional") }).strict(),
  requires: () => ["model", "encode"],
  build: (config, models) => ({
    config,
    bind: (prompts) => plain("unconditional", models, unconditionalPrompts(models, prompts.length)),
  }),
  neutral: (config) => ({ config, equals: "unconditional" }),
};
