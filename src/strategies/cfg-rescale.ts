// Classifier-free guidance with rescaling (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps
// are Flawed", WACV, arXiv 2305.08891, §3.4 eq. 15–16): high guidance inflates the prediction's scale and
// over-exposes; rescaling it back to the conditional prediction's standard deviation fixes that, and φ mixes the
// rescaled and plain results to avoid over-flat images:
//   eps_cfg = eps_u + s·(eps_c − eps_u)
//   eps_re  = eps_cfg · std(eps_c) / std(eps_cfg)        (std over each sample's pixels and channels)
//   eps_g   = φ·eps_re + (1 − φ)·eps_cfg
// The paper rescales its v-prediction; as diffusers' rescale_noise_cfg, the rescale here acts on the model's
// output (eps for the models of this repository). φ = 0 is plain cfg; variance from the conditional half.
import { z } from "zod";
import type { Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
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

export const cfgRescaleSchema = z
  .object({
    kind: z.literal("cfg-rescale"),
    scale: scaleSchema({ default: 3, min: 0 }),
    /** φ ∈ [0, 1]; the paper recommends 0.7. */
    phi: z.number().min(0).max(1).default(0.7),
    ...windowFields,
  })
  .strict()
  .superRefine(checkWindow);
export type CfgRescaleConfig = z.infer<typeof cfgRescaleSchema>;

/** Standard deviation of each sample over H, W, C, shaped [B, 1, 1, 1]; the ratio makes Bessel's factor cancel. */
function sampleStd(x: Tensor4D): Tensor4D {
  const { variance } = tf.moments(x, [1, 2, 3], true);
  return tf.sqrt(variance) as Tensor4D;
}

/** φ·(g·std(c)/std(g)) + (1 − φ)·g with g the cfg output and c the conditional prediction. */
export function rescaleGuided(guided: Tensor4D, cond: Tensor4D, phi: number): Tensor4D {
  if (phi === 0) return guided;
  return tf.tidy(() => {
    const rescaled = tf.mul(guided, tf.div(sampleStd(cond), sampleStd(guided)));
    return tf.add(tf.mul(phi, rescaled), tf.mul(1 - phi, guided)) as Tensor4D;
  });
}

export const cfgRescaleStrategy: StrategyDef<CfgRescaleConfig> = {
  kind: "cfg-rescale",
  summary: "classifier-free guidance rescaled to the conditional prediction's std, mixed by φ",
  citation: "Lin et al. 2024 (Common Diffusion Noise Schedules and Sample Steps are Flawed) §3.4",
  example: { kind: "cfg-rescale", scale: 3, phi: 0.7 },
  schema: () => cfgRescaleSchema,
  requires: () => ["model", "encode"],
  build: (config, models) => ({
    config,
    bind: (prompts) =>
      pairGuided({
        kind: "cfg-rescale",
        models,
        prompts,
        otherPrompts: unconditionalPrompts(models, prompts.length),
        enabled: config.scale !== 1,
        window: config,
        combine: (c, u) => withOut(c, rescaleGuided(cfgEps(c.out, u.out, config.scale), c.out, config.phi)),
      }),
  }),
  neutral: (config) => ({ config: { ...config, scale: 1 }, equals: "conditional" }),
};
