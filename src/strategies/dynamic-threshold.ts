// Dynamic thresholding (Saharia et al. 2022, "Photorealistic Text-to-Image Diffusion Models with Deep Language
// Understanding" (Imagen), arXiv 2205.11487, §2.3): at high guidance the predicted x0 leaves [−1, 1]; instead of
// clipping (saturating) it, each sample is clamped to its own percentile and rescaled:
//   s   = max(quantile_p(|x0|), 1)        (per sample, over H, W, C; linear interpolation as torch.quantile)
//   x0' = clamp(x0, −s, s) / s
// A `denoisedFn` that wraps any strategy (`base`, default none); outside the guidance window x0 is left as is.
import { z } from "zod";
import type { Tensor2D, Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import type { DenoisedFn } from "../core/types.ts";
import {
  checkWindow,
  DEFAULT_BASE,
  type GuidanceWindow,
  inWindow,
  windowFields,
  wrapSampling,
} from "./shared.ts";
import type { StrategyDef } from "./strategy.ts";

export function dynamicThresholdSchema(nested: z.ZodType<{ kind: string }>) {
  return z
    .object({
      kind: z.literal("dynamic-threshold"),
      /** p ∈ (0, 1]: the quantile of |x0| used as the threshold (Imagen: 0.995). */
      percentile: z.number().gt(0).max(1).default(0.995),
      base: nested.default(DEFAULT_BASE),
      ...windowFields,
    })
    .strict()
    .superRefine(checkWindow);
}
export interface DynamicThresholdConfig extends GuidanceWindow {
  kind: "dynamic-threshold";
  percentile: number;
  base: { kind: string };
}

/** Per-sample quantile of |x| with linear interpolation between order statistics (torch.quantile's default). */
export function absQuantile(x: Tensor4D, p: number): Tensor2D {
  return tf.tidy(() => {
    const [b] = x.shape;
    const flat = tf.reshape(tf.abs(x), [b, -1]) as Tensor2D;
    const n = flat.shape[1];
    const pos = p * (n - 1);
    const lo = Math.floor(pos);
    const hi = Math.min(lo + 1, n - 1);
    const frac = pos - lo;
    // topk sorts descending: ascending rank r sits at column n − 1 − r, and only the top n − lo are needed.
    const { values } = tf.topk(flat, n - lo, true);
    const at = (r: number) => tf.slice(values, [0, n - 1 - r], [b, 1]) as Tensor2D;
    const vLo = at(lo);
    return frac === 0 ? vLo : (tf.add(vLo, tf.mul(frac, tf.sub(at(hi), vLo))) as Tensor2D);
  });
}

/** The thresholding itself, usable as any sampler's denoisedFn. */
export function dynamicThreshold(percentile: number, window: GuidanceWindow = { tMin: 0 }): DenoisedFn {
  return (x0, step) => {
    if (!inWindow(window, step)) return x0;
    return tf.tidy(() => {
      const [b] = x0.shape;
      const s = tf.reshape(tf.maximum(absQuantile(x0, percentile), 1), [b, 1, 1, 1]);
      return tf.div(tf.minimum(tf.maximum(x0, tf.neg(s)), s), s) as Tensor4D;
    });
  };
}

export const dynamicThresholdStrategy: StrategyDef<DynamicThresholdConfig> = {
  kind: "dynamic-threshold",
  summary: "Imagen's dynamic thresholding of x0, wrapping any strategy",
  citation: "Saharia et al. 2022 (Imagen) §2.3",
  example: { kind: "dynamic-threshold", percentile: 0.995, base: { kind: "cfg", scale: 3 } },
  schema: dynamicThresholdSchema,
  requires: () => [],
  build: (config, models, ctx) => {
    const base = ctx.build(config.base, models);
    const fn = dynamicThreshold(config.percentile, config);
    return { config, bind: (prompts) => wrapSampling(base.bind(prompts), { denoisedFn: fn }) };
  },
  // No percentile is an identity, so the neutral form is an empty window: exactly the base strategy.
  neutral: (config) => ({ config: { ...config, tMin: 1e9, tMax: 1e9 }, equals: "base" }),
};
