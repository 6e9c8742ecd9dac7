// Adaptive projected guidance (Sadat et al. 2025, "Eliminating Oversaturation and Artifacts of High Guidance
// Scales in Diffusion Models", ICLR, arXiv 2410.02416, Algorithm 1). In the denoised (x0) space, the cfg update is
// split into a part parallel to the conditional prediction (which mostly raises saturation) and an orthogonal part
// (which mostly improves quality); the parallel part is down-weighted by η:
//   Δ_k  = D_c − D_u + β·Δ_{k−1}                    (momentum β, usually negative; Δ_{−1} = 0)
//   Δ    = Δ_k · min(1, r / ‖Δ_k‖)                   (norm threshold r; r = 0 disables it)
//   Δ∥   = ⟨Δ, D̂_c⟩·D̂_c,  Δ⊥ = Δ − Δ∥,   D̂_c = D_c / ‖D_c‖   (norms per sample over H, W, C)
//   D_g  = D_c + (s − 1)·(Δ⊥ + η·Δ∥)
// D = x0 predicted from the model output through the diffusion (needs models.diffusion). With η = 1, β = 0, r = 0
// this is cfg expressed on x0. s = 1 is the conditional model (one call); variance from the conditional half.
import { z } from "zod";
import type { GaussianDiffusion } from "../core/diffusion.ts";
import type { Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import type { Prediction } from "../core/types.ts";
import {
  checkWindow,
  pairGuided,
  scaleSchema,
  unconditionalPrompts,
  windowFields,
  withOut,
} from "./shared.ts";
import type { StrategyDef } from "./strategy.ts";

export const apgSchema = z
  .object({
    kind: z.literal("apg"),
    /** s in GLIDE's convention (the paper's w): 1 = conditional model. */
    scale: scaleSchema({ default: 3, min: 0 }),
    /** η: weight of the parallel component (0 drops it). */
    eta: z.number().min(0).max(1).default(0),
    /** r: the per-sample norm threshold of the update in x0 space (0 = no threshold). */
    normThreshold: z.number().min(0).default(0),
    /** β ∈ (−1, 1): momentum on the update across steps (0 = none). */
    momentum: z.number().gt(-1).lt(1).default(0),
    ...windowFields,
  })
  .strict()
  .superRefine(checkWindow);
export type ApgConfig = z.infer<typeof apgSchema>;

/** x0 implied by a prediction of any parameterisation. */
export function predictedX0(d: GaussianDiffusion, p: Prediction, x: Tensor4D, index: number): Tensor4D {
  if (p.kind === "x0") return p.out;
  return p.kind === "eps" ? d.predictXstartFromEps(x, index, p.out) : d.predictXstartFromV(x, index, p.out);
}

const norm = (v: Tensor4D) => tf.sqrt(tf.sum(tf.square(v), [1, 2, 3], true)) as Tensor4D;

/**
 * One APG combination given the (momentum-averaged) update Δ = D_c − D_u (+ β·Δ_prev): thresholding, projection,
 * guided x0.
 */
export function apgCombine(
  dCond: Tensor4D,
  delta: Tensor4D,
  o: { scale: number; eta: number; normThreshold: number },
): Tensor4D {
  return tf.tidy(() => {
    let d = delta;
    if (o.normThreshold > 0) d = tf.mul(d, tf.minimum(1, tf.div(o.normThreshold, norm(d)))) as Tensor4D;
    // torch's F.normalize: v / max(‖v‖, 1e-12).
    const unit = tf.div(dCond, tf.maximum(norm(dCond), 1e-12)) as Tensor4D;
    const parallel = tf.mul(tf.sum(tf.mul(d, unit), [1, 2, 3], true), unit);
    const orthogonal = tf.sub(d, parallel);
    const update = tf.add(orthogonal, tf.mul(o.eta, parallel));
    return tf.add(dCond, tf.mul(o.scale - 1, update)) as Tensor4D;
  });
}

export const apgStrategy: StrategyDef<ApgConfig> = {
  kind: "apg",
  summary: "adaptive projected guidance: cfg in x0 space with the parallel part down-weighted by η",
  citation: "Sadat et al. 2025 (Eliminating Oversaturation and Artifacts of High Guidance Scales) Alg. 1",
  example: { kind: "apg", scale: 3, eta: 0, normThreshold: 0, momentum: -0.5 },
  schema: () => apgSchema,
  requires: () => ["model", "encode", "diffusion"],
  build: (config, models) => {
    const d = models.diffusion!;
    return {
      config,
      bind: (prompts) => {
        let running: Tensor4D | undefined;
        const reset = () => {
          running?.dispose();
          running = undefined;
        };
        return pairGuided({
          kind: "apg",
          models,
          prompts,
          otherPrompts: unconditionalPrompts(models, prompts.length),
          enabled: config.scale !== 1,
          window: config,
          reset,
          extraDispose: reset,
          combine: (c, u, x, step) => {
            const dCond = predictedX0(d, c, x, step.index);
            let delta = tf.sub(dCond, predictedX0(d, u, x, step.index)) as Tensor4D;
            if (config.momentum !== 0) {
              if (running) delta = tf.add(delta, tf.mul(config.momentum, running)) as Tensor4D;
              const kept = tf.keep(tf.clone(delta));
              running?.dispose();
              running = kept;
            }
            return withOut(c, apgCombine(dCond, delta, config), "x0");
          },
        });
      },
    };
  },
  neutral: (config) => ({ config: { ...config, scale: 1 }, equals: "conditional" }),
};
