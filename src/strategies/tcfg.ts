// Tangential damping classifier-free guidance, TCFG (Kwon et al. 2025, "TCFG: Tangential Damping Classifier-free
// Guidance", CVPR, arXiv 2503.18137). Per sample, the 2×N matrix P = [c; u] of the flattened conditional and
// unconditional predictions has the SVD P = U·S·Vᵀ; the unconditional prediction keeps only its component along
// the dominant right singular vector v₁ (its "tangential" component along v₂ is removed), then cfg extrapolates:
//   u' = ⟨u, v₁⟩·v₁,      g = u' + s·(c − u')
// (diffusers' TangentialClassifierFreeGuidance: Vh with its second row zeroed.) v₁ is found without an SVD routine
// (TensorFlow.js has none): it is P's row space direction for the larger eigenvalue λ₁ of the 2×2 Gram matrix
//   G = P·Pᵀ = [[a, b], [b, d]],  a = ‖c‖², b = ⟨c, u⟩, d = ‖u‖²,  λ₁ = (a+d)/2 + √(((a−d)/2)² + b²)
// with eigenvector w = (λ₁ − d, b) if a ≥ d else (b, λ₁ − a) (whichever cannot vanish), and v₁ ∝ w₀·c + w₁·u, so
//   u' = (⟨u, c⟩·w₀ + ‖u‖²·w₁) / ‖w₀·c + w₁·u‖² · (w₀·c + w₁·u).
// v₁'s sign cancels. s in GLIDE's convention (= diffusers' guidance_scale): s = 1 is the conditional model (one
// call); variance from the conditional half.
import { z } from "zod";
import type { Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import {
  checkWindow,
  pairGuided,
  scaleSchema,
  unconditionalPrompts,
  windowFields,
  withOut,
} from "./shared.ts";
import type { StrategyDef } from "./strategy.ts";

export const tcfgSchema = z
  .object({
    kind: z.literal("tcfg"),
    /** s in GLIDE's convention: 1 = conditional model. */
    scale: scaleSchema({ default: 3, min: 0 }),
    ...windowFields,
  })
  .strict()
  .superRefine(checkWindow);
export type TcfgConfig = z.infer<typeof tcfgSchema>;

const dot = (p: Tensor4D, q: Tensor4D) => tf.sum(tf.mul(p, q), [1, 2, 3], true) as Tensor4D;

/** u' = ⟨u, v₁⟩·v₁ with v₁ the dominant right singular vector of [c; u] per sample (see the opening comment). */
export function tangentialDamp(c: Tensor4D, u: Tensor4D): Tensor4D {
  return tf.tidy(() => {
    const a = dot(c, c);
    const b = dot(c, u);
    const d = dot(u, u);
    const half = tf.div(tf.sub(a, d), 2);
    const lambda1 = tf.add(tf.div(tf.add(a, d), 2), tf.sqrt(tf.add(tf.square(half), tf.square(b))));
    const aFirst = tf.greaterEqual(a, d);
    const w0 = tf.where(aFirst, tf.sub(lambda1, d), b);
    const w1 = tf.where(aFirst, b, tf.sub(lambda1, a));
    const dir = tf.add(tf.mul(w0, c), tf.mul(w1, u)) as Tensor4D;
    const coef = tf.div(tf.add(tf.mul(b, w0), tf.mul(d, w1)), dot(dir, dir));
    return tf.mul(coef, dir) as Tensor4D;
  });
}

/** g = u' + s·(c − u'). */
export function tcfgCombine(c: Tensor4D, u: Tensor4D, s: number): Tensor4D {
  return tf.tidy(() => {
    const damped = tangentialDamp(c, u);
    return tf.add(damped, tf.mul(s, tf.sub(c, damped))) as Tensor4D;
  });
}

export const tcfgStrategy: StrategyDef<TcfgConfig> = {
  kind: "tcfg",
  summary: "cfg from u projected on the dominant right singular vector of [c; u] (tangential part removed)",
  citation: "Kwon et al. 2025 (TCFG: Tangential Damping Classifier-free Guidance)",
  example: { kind: "tcfg", scale: 3 },
  schema: () => tcfgSchema,
  requires: () => ["model", "encode"],
  build: (config, models) => ({
    config,
    bind: (prompts) =>
      pairGuided({
        kind: "tcfg",
        models,
        prompts,
        otherPrompts: unconditionalPrompts(models, prompts.length),
        enabled: config.scale !== 1,
        window: config,
        combine: (c, u) => withOut(c, tcfgCombine(c.out, u.out, config.scale)),
      }),
  }),
  neutral: (config) => ({ config: { ...config, scale: 1 }, equals: "conditional" }),
};
