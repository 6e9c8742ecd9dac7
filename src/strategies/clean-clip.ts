// CLIP guidance as the community practised it before GLIDE: a CLIP trained on CLEAN images only scores the
// denoiser's predicted x0, and the gradient of that score steers sampling. Katherine Crowson's "CLIP Guided
// Diffusion" notebooks (2021; guided-diffusion's 256×256 model, `cond_fn` differentiating the CLIP loss of
// `pred_xstart` with respect to x_t through the model) and k-diffusion's `sample_clip_guided.py`
// (github.com/crowsonkb/k-diffusion: `spherical_dist_loss`, `make_cond_model_fn`, `cond_fn`); GLIDE (Nichol et al.
// 2021, arXiv 2112.10741, §2.4) replaced it with a CLIP trained on noised images (the `clip` kind) because a clean
// CLIP sees only the blurry x0 estimates of early steps.
//
//   L(x̂0) = Σ_b d(z_image(x̂0_b), z_text_b),   d(u, v) = 2·arcsin(‖u − v‖/2)²   (spherical distance of unit vectors)
//   k-diffusion: denoised' = denoised − s·σ²·∇_x L    (VE x, σ² = (1 − ᾱ)/ᾱ), which in this project's VP terms is
//   ε' = ε + s·√(1 − ᾱ_t)·∇_{x_t} L(x̂0(x_t))          (Dhariwal & Nichol 2021 eq. 14's form, g = −s·∇L)
//
// backprop: true (both references) differentiates through the denoiser that gave x̂0 (its forward runs on the
// gradient tape: one forward and one backward of the denoiser per step, where NFE counts the forward only).
// backprop: false holds the denoiser out of the gradient and takes ∇_{x_t} L ≈ ∇_{x̂0} L (∂x̂0/∂x_t ≈ I, exact as
// t → 0 where x̂0 → x_t): no backward through the denoiser, so it also runs when the denoiser is on ONNX Runtime.
// The gradient itself (`cleanClipGrad`) is a plain TensorFlow.js function of x0, so it can be traced: the zoo's
// guides on ONNX Runtime replay it as a graph (`CleanClip.lossGrad`).
//
// Left out of the references: cutouts and augmentations (they fed a 224-pixel CLIP crops of larger images; this
// CLIP sees the whole image at its own resolution) and the TV/range losses. The guide is models.cleanClip (a
// clean-render CLIP: the zoo's `clean-clip`, or `model: NAME`); it must never be the evaluation CLIP (the sweep
// refuses it). s = 0 is exactly the base; outside the guidance window the base's prediction passes unchanged.
import { z } from "zod";
import type { GaussianDiffusion } from "../core/diffusion.ts";
import { type Scalar, type Tensor, type Tensor2D, type Tensor4D, tf } from "../core/engine.ts";
import type { Prediction, StepInfo } from "../core/types.ts";
import { predictedX0 } from "./apg.ts";
import {
  addCalls,
  checkWindow,
  DEFAULT_BASE,
  guideModelField,
  inWindow,
  scaleSchema,
  tidyPred,
  windowFields,
} from "./shared.ts";
import type { CleanClip, GuidedSampling, StrategyDef } from "./strategy.ts";

export const cleanClipSchema = (nested: z.ZodType<{ kind: string }>) =>
  z
    .object({
      kind: z.literal("clean-clip"),
      /** s ≥ 0 on the spherical-distance loss (k-diffusion's clip_guidance_scale); default 100. */
      scale: scaleSchema({ default: 100, min: 0 }),
      /** Differentiate through the denoiser (true, as the references) or take ∇_{x̂0} as ∇_{x_t} (false). */
      backprop: z.boolean().default(true),
      base: nested.default(DEFAULT_BASE),
      ...guideModelField,
      ...windowFields,
    })
    .strict()
    .superRefine(checkWindow);
export type CleanClipConfig = z.infer<ReturnType<typeof cleanClipSchema>>;

/** arcsin with its gradient 1/√(1 − h²) (tfjs-core registers none for Asin). */
const asin = tf.customGrad((...args) => {
  const h = args[0] as Tensor;
  (args[1] as (t: Tensor[]) => void)([h]);
  return {
    value: tf.asin(h),
    gradFunc: (dy: Tensor, saved: Tensor[]) => tf.div(dy, tf.sqrt(tf.sub(1, tf.square(saved[0]!)))),
  };
}) as (h: Tensor) => Tensor;

/** Crowson's spherical distance loss summed over rows: Σ_b 2·arcsin(‖u_b − v_b‖/2)² for unit-norm u, v [B, D]. */
export function sphericalDistLoss(u: Tensor2D, v: Tensor2D): Scalar {
  return tf.tidy(() => {
    const half = tf.div(tf.sqrt(tf.sum(tf.square(tf.sub(u, v)), -1)), 2);
    // ‖u − v‖/2 ≤ 1 for unit vectors up to rounding; asin is undefined past it.
    return tf.sum(tf.mul(2, tf.square(asin(tf.clipByValue(half, 0, 1))))) as Scalar;
  });
}

/** L(x0) = Σ_b d(z_image(x0_b), z_text_b): the guide's loss, a plain function of x0. */
export const cleanClipLoss = (clip: CleanClip, x0: Tensor4D, zText: Tensor2D): Scalar =>
  sphericalDistLoss(clip.embedImage(x0), zText);

/** ∇_{x0} L(x0): the clean CLIP's gradient on an image (no denoiser involved). */
export function cleanClipGrad(clip: CleanClip, x0: Tensor4D, zText: Tensor2D): Tensor4D {
  return tf.tidy(() => tf.grad((x) => cleanClipLoss(clip, x as Tensor4D, zText))(x0) as Tensor4D);
}

/** The base prediction as ε (the guided prediction is given as ε whatever the base's parameterisation). */
function epsOf(d: GaussianDiffusion, p: Prediction, x: Tensor4D, index: number): Tensor4D {
  return p.kind === "eps" ? p.out : d.predictEpsFromXstart(x, index, predictedX0(d, p, x, index));
}

/**
 * One guided prediction: ε' = ε + s·√(1 − ᾱ_t)·∇L, with ∇L through the denoiser (backprop) or on x̂0 (not).
 * `denoise` is the base's; `x` is not disposed.
 */
export function cleanClipGuided(
  denoise: (x: Tensor4D, step: StepInfo) => Prediction,
  x: Tensor4D,
  step: StepInfo,
  o: { clip: CleanClip; zText: Tensor2D; scale: number; backprop: boolean; diffusion: GaussianDiffusion },
): Prediction {
  const d = o.diffusion;
  const coef = o.scale * d.sqrtOneMinusAlphasCumprod[step.index]!;
  if (!o.backprop) {
    return tidyPred(() => {
      const p = denoise(x, step);
      const x0 = predictedX0(d, p, x, step.index);
      const grad = o.clip.lossGrad?.(x0, o.zText) ?? cleanClipGrad(o.clip, x0, o.zText);
      const eps = tf.add(epsOf(d, p, x, step.index), tf.mul(coef, grad)) as Tensor4D;
      return p.varValues ? { out: eps, kind: "eps", varValues: p.varValues } : { out: eps, kind: "eps" };
    });
  }
  return tidyPred(() => {
    // The base's prediction comes out of the gradient's own scope (kept), so the denoiser runs once.
    let pred: Prediction | undefined;
    const grad = tf.grad((xt) => {
      const xv = xt as Tensor4D;
      const p = denoise(xv, step);
      pred = p;
      tf.keep(p.out);
      if (p.varValues) tf.keep(p.varValues);
      return cleanClipLoss(o.clip, predictedX0(d, p, xv, step.index), o.zText);
    })(x) as Tensor4D;
    const p = pred!;
    const eps = tf.add(epsOf(d, p, x, step.index), tf.mul(coef, grad)) as Tensor4D;
    // Kept tensors escape every scope: copy what is returned into this one, then free the originals.
    const varValues = p.varValues ? (tf.clone(p.varValues) as Tensor4D) : undefined;
    tf.dispose([p.out, p.varValues].filter((t): t is Tensor4D => t !== undefined));
    return varValues ? { out: eps, kind: "eps", varValues } : { out: eps, kind: "eps" };
  });
}

export const cleanClipStrategy: StrategyDef<CleanClipConfig> = {
  kind: "clean-clip",
  summary: "clean-CLIP spherical-distance gradient on the predicted x0, through the denoiser or not",
  citation: "Crowson 2021 (CLIP Guided Diffusion); k-diffusion sample_clip_guided.py",
  example: { kind: "clean-clip", scale: 100 },
  guideKeys: ["cleanClip", "cleanClipText"],
  schema: cleanClipSchema,
  requires: (c) => (c.scale === 0 ? [] : ["cleanClip", "cleanClipText", "diffusion"]),
  build(config, models, ctx) {
    // Differentiating through the denoiser needs it on TensorFlow.js's tape.
    const net = config.backprop && models.gradModel ? { ...models, model: models.gradModel } : models;
    const base = ctx.build(config.base, config.scale === 0 ? models : net);
    return {
      config,
      bind(prompts): GuidedSampling {
        const inner = base.bind(prompts);
        if (config.scale === 0) return inner;
        let zText: Tensor2D;
        try {
          zText = models.cleanClipText!(prompts);
        } catch (e) {
          inner.dispose();
          throw e;
        }
        const o = {
          clip: models.cleanClip!,
          zText,
          scale: config.scale,
          backprop: config.backprop,
          diffusion: models.diffusion!,
        };
        return {
          denoise: (x, step) =>
            inWindow(config, step) ? cleanClipGuided(inner.denoise, x, step, o) : inner.denoise(x, step),
          ...(inner.condFn ? { condFn: inner.condFn } : {}),
          ...(inner.denoisedFn ? { denoisedFn: inner.denoisedFn } : {}),
          ...(inner.clipDenoised !== undefined ? { clipDenoised: inner.clipDenoised } : {}),
          calls: (step) => addCalls(inner.calls(step), { clip: inWindow(config, step) ? 1 : 0 }),
          dispose() {
            zText.dispose();
            inner.dispose();
          },
        };
      },
    };
  },
  neutral: (config) => ({ config: { ...config, scale: 0 }, equals: "base" }),
  // The guided prediction is rebuilt as ε without the base's renoising one, so a renoising base (cfg++) would step
  // as plain guidance at λ: refused when the config is parsed.
  refusesRenoisingBase: true,
};
