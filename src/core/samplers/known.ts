// Known-region replacement for inpainting and iterative editing, for every sampler: on the predicted x0 (GLIDE's
// inpaint notebook, through denoisedFn) or on x after each step (RePaint-style replacement without resampling).
import type { Tensor4D } from "../engine.ts";
import { tf } from "../engine.ts";
import type { DenoisedFn } from "../types.ts";

/** Pixels to keep: x ∈ [-1, 1] NHWC and mask [B or 1, H, W, 1] with 1 = known. */
export interface KnownRegion {
  image: Tensor4D;
  mask: Tensor4D;
  /**
   * "x0" (default): GLIDE's inpaint notebook, whose denoised_fn overwrites the predicted x0's known pixels before
   * the update. "xt": after every step the known pixels become the image noised to the step's level (q_sample in
   * VP space, image + σ·z in σ-space), the clean image after the last step.
   */
  mode?: "x0" | "xt";
}

/** x0·(1 − m) + image·m, the official inpainting denoised_fn. */
export function knownRegionDenoisedFn(known: KnownRegion): DenoisedFn {
  return (x0) =>
    tf.tidy(() => tf.add(tf.mul(x0, tf.sub(1, known.mask)), tf.mul(known.image, known.mask)) as Tensor4D);
}

/** x with its known pixels replaced by `target`. */
export function mergeKnown(x: Tensor4D, target: Tensor4D, mask: Tensor4D): Tensor4D {
  return tf.tidy(() => tf.add(tf.mul(x, tf.sub(1, mask)), tf.mul(target, mask)) as Tensor4D);
}

export function checkKnown(known: KnownRegion, x: Tensor4D): void {
  const [b, h, w, c] = x.shape;
  const [mb, mh, mw, mc] = known.mask.shape;
  const [ib, ih, iw, ic] = known.image.shape;
  if (mh !== h || mw !== w || mc !== 1 || (mb !== 1 && mb !== b)) {
    throw new Error(`known region: mask must be [${b} or 1, ${h}, ${w}, 1], got [${known.mask.shape}]`);
  }
  if (ih !== h || iw !== w || ic !== c || (ib !== 1 && ib !== b)) {
    throw new Error(`known region: image must be [${b} or 1, ${h}, ${w}, ${c}], got [${known.image.shape}]`);
  }
}
