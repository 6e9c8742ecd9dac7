// Deliberate perturbations of a UNet's forward, for the guides that steer a model away from a degraded copy of
// itself (PAG, SEG, skip-layer guidance, autoguidance with dropped layers). One small mechanism for all of them: a
// perturbation names UNet blocks by their checkpoint path ("input_blocks.4.1", "middle_block.1",
// "output_blocks.3.1") and one operation applied there; the TensorFlow.js forward (unet.ts) and the ONNX export
// (onnx/export.ts) both read the resolved map, so every runtime perturbs identically.
//
// Operations:
// - identity-attention (PAG, Ahn et al. 2024, "Self-Rectifying Diffusion Sampling with Perturbed-Attention
//   Guidance", arXiv 2403.17377: the self-attention map replaced by the identity). GLIDE's attention has ONE softmax over [text keys; image keys] (text first). Here the image-to-image
//   part of the map becomes the identity while the text columns keep the weights the unperturbed softmax gives them:
//     out_i = Σ_l P_il·v_l (text l) + (1 − Σ_l P_il)·v_i
//   Why: PAG perturbs self-attention only and leaves cross-attention (the prompt's path) intact; in SD those are
//   separate layers. Dropping the text columns too (out_i = v_i) would also remove the prompt from the layer and
//   mix text-dropout guidance into PAG. Each query keeps the total weight it gave text and puts the rest on itself.
//   Without text keys (unconditional models, or no encoder) this is out_i = v_i, the value projection path.
// - smoothed-queries (SEG, Hong 2024, "Smoothed Energy Guidance", arXiv 2408.00760: attention queries blurred by a 2-D Gaussian of σ over
//   the image grid; σ ≥ 9999 replaces every query with the mean query). Kernel as the author's SEG-SDXL code:
//   size ⌈6σ⌉ + 1 − (⌈6σ⌉ mod 2), capped at the side (odd), linspace taps exp(−x²/2σ²) normalised, reflect padding.
//   (diffusers' SEG hook at the fetched commit swaps the two branches: it blurs above the threshold.)
// - skip (SLG, skip-layer guidance of SD 3.5, and STG, Hyung et al. 2024, arXiv 2411.18664; autoguidance's
//   "weak model = the model with dropped layers"): the block returns its input. Only blocks whose output has their
//   input's shape can be skipped (attention blocks, ResBlocks without resampling or channel change).
import type { Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";

export const PERTURBATION_OPS = ["identity-attention", "smoothed-queries", "skip"] as const;
export type PerturbationOp = (typeof PERTURBATION_OPS)[number];

export interface Perturbation {
  op: PerturbationOp;
  /** UNet block paths, as in the checkpoint: "middle_block.1", "input_blocks.7.1", … */
  layers: readonly string[];
  /** smoothed-queries: the Gaussian's σ in tokens (≥ 9999: the mean query). */
  sigma?: number;
}

/** SEG's threshold above which the blur is the mean query (the author's inf_blur_threshold). */
export const SEG_INFINITE_SIGMA = 9999;

/** A canonical key of a perturbation (ONNX session caches, provenance). */
export function perturbationKey(p: Perturbation | undefined): string {
  if (!p) return "none";
  const sigma = p.op === "smoothed-queries" ? `:${p.sigma}` : "";
  return `${p.op}${sigma}@${[...p.layers].sort().join(",")}`;
}

/** SEG's 1-D Gaussian taps for σ on a grid of `side` tokens (the author's kernel-size rule, capped at the side). */
export function segKernel(sigma: number, side: number): Float32Array {
  const six = Math.ceil(6 * sigma);
  const size = Math.min(six + 1 - (six % 2), side - ((side % 2) - 1));
  const half = (size - 1) / 2;
  const taps = Float32Array.from({ length: size }, (_, i) => {
    const x = size === 1 ? 0 : -half + (i * (2 * half)) / (size - 1);
    return Math.exp(-0.5 * (x / sigma) ** 2);
  });
  const sum = taps.reduce((a, b) => a + b, 0);
  return taps.map((t) => t / sum);
}

/**
 * Queries [B, heads, H·W, ch] (tokens row-major over the grid) blurred spatially per head and channel: SEG's
 * smoothing on TensorFlow.js.
 */
export function smoothQueries(q: Tensor4D, hgt: number, wid: number, sigma: number): Tensor4D {
  return tf.tidy(() => {
    const [b, heads, t, ch] = q.shape;
    if (sigma >= SEG_INFINITE_SIGMA) return tf.mul(tf.onesLike(q), tf.mean(q, 2, true)) as Tensor4D;
    const k1 = segKernel(sigma, Math.min(hgt, wid));
    const k = k1.length;
    const c = heads * ch;
    // [B, heads, T, ch] → [B, H, W, heads·ch] for a depthwise conv with the separable kernel's outer product.
    const grid = tf.reshape(tf.transpose(q, [0, 2, 1, 3]), [b, hgt, wid, c]) as Tensor4D;
    const taps = Array.from(k1).flatMap((a) => Array.from(k1).flatMap((v) => Array<number>(c).fill(a * v)));
    const p = Math.floor(k / 2);
    const padded = tf.mirrorPad(
      grid,
      [
        [0, 0],
        [p, p],
        [p, p],
        [0, 0],
      ],
      "reflect",
    );
    const blurred = tf.depthwiseConv2d(padded, tf.tensor4d(taps, [k, k, c, 1]), 1, "valid");
    return tf.transpose(tf.reshape(blurred, [b, t, heads, ch]), [0, 2, 1, 3]) as Tensor4D;
  });
}

/**
 * PAG's identity attention (see the opening comment). q, k, v [B, heads, T(+L), ch] with the `textKeys` text keys
 * FIRST among k and v; the softmax scale as layers.ts's attention.
 */
export function identityAttention(q: Tensor4D, k: Tensor4D, v: Tensor4D, textKeys: number): Tensor4D {
  return tf.tidy(() => {
    const [b, heads, t, ch] = q.shape;
    const vImage = tf.slice(v, [0, 0, textKeys, 0], [b, heads, t, ch]) as Tensor4D;
    if (textKeys === 0) return tf.clone(vImage);
    const s = 1 / Math.sqrt(Math.sqrt(ch));
    const p = tf.softmax(tf.matMul(tf.mul(q, s) as Tensor4D, tf.mul(k, s) as Tensor4D, false, true), -1);
    const pText = tf.slice(p, [0, 0, 0, 0], [b, heads, t, textKeys]) as Tensor4D;
    const vText = tf.slice(v, [0, 0, 0, 0], [b, heads, textKeys, ch]) as Tensor4D;
    const self = tf.sub(1, tf.sum(pText, -1, true));
    return tf.add(tf.matMul(pText, vText), tf.mul(self, vImage)) as Tensor4D;
  });
}
