// Frequency-decoupled guidance, FDG (Sadat et al. 2025, "Guidance in the Frequency Domain Enables High-Fidelity
// Sampling at Low CFG Scales", arXiv 2506.19713, Algorithm 2). Both predictions are split into a Laplacian pyramid
// (Burt & Adelson 1983) and cfg is applied per level with its own scale, high frequencies first:
//   c = Σ_i ↑ⁱ c_i,  u = Σ_i ↑ⁱ u_i                         (levels i = 0 … L−1, 0 the finest band)
//   Δ_i = c_i − u_i;  optionally Δ_i = w_i·Δ_i∥ + Δ_i⊥      (parallel / orthogonal to c_i, APG's projection)
//   g_i = u_i + s_i·Δ_i   (a level with s_i = 1 keeps c_i);   g = pyramid⁻¹(g_0 … g_{L−1})
// The paper's finding: a low scale on the low band keeps diversity and colour, a high one on the high band adds
// detail. The pyramid is kornia's build_laplacian_pyramid, which diffusers' FrequencyDecoupledGuidance uses:
//   G_0 = x,  G_{i+1} = down(blur(G_i)),  L_i = G_i − blur(up(G_{i+1})),  L_{L−1} = G_{L−1}
// with blur the 5×5 binomial kernel [1 4 6 4 1]ᵀ[1 4 6 4 1]/256 on reflect padding, and down / up bilinear
// resizing by 2 with half-pixel centres (PyTorch's align_corners = False); the inverse adds the bands back through
// blur(up(·)), so a level-wise identity reconstructs x. Sizes must halve exactly at every level and be powers of
// two along one side (kornia pads otherwise; not done here: it is an error). The config names the paper's two
// scales: `scale` (w_high) on the finest band and `lowScale` (w_low) on every coarser level, so that sweeps and
// `--scale` vary the high-frequency scale; fdgCombine takes one scale per level. Scales in GLIDE's convention
// (= diffusers' guidance_scales); both 1 is the conditional model (one call); variance from the conditional half.
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

export const fdgSchema = z
  .object({
    kind: z.literal("fdg"),
    /** s_0, the finest (high-frequency) band's scale in GLIDE's convention: the paper's w_high. */
    scale: scaleSchema({ default: 5, min: 0 }),
    /** The scale of every coarser level: the paper's w_low. */
    lowScale: scaleSchema({ default: 2, min: 0 }),
    /** L ≥ 2: pyramid levels (diffusers' default 2, one band and one low-pass level). */
    levels: z.number().int().min(2).max(6).default(2),
    /** w: weight of Δ's part parallel to c_i on every level (1 = the plain cfg shift). */
    parallelWeight: z.number().min(0).max(1).default(1),
    ...windowFields,
  })
  .strict()
  .superRefine(checkWindow);
export type FdgConfig = z.infer<typeof fdgSchema>;

const BINOMIAL = [1, 4, 6, 4, 1];

/** kornia's pyramid blur: the 5×5 binomial kernel /256 on each channel, reflect padding of 2. */
function blur(x: Tensor4D): Tensor4D {
  return tf.tidy(() => {
    const c = x.shape[3];
    const k = BINOMIAL.flatMap((a) => BINOMIAL.flatMap((b) => Array<number>(c).fill((a * b) / 256)));
    const filter = tf.tensor4d(k, [5, 5, c, 1]);
    const padded = tf.mirrorPad(
      x,
      [
        [0, 0],
        [2, 2],
        [2, 2],
        [0, 0],
      ],
      "reflect",
    );
    return tf.depthwiseConv2d(padded, filter, 1, "valid") as Tensor4D;
  });
}

/** Bilinear ×½ with half-pixel centres: each output is the mean of a 2×2 block. */
const down = (x: Tensor4D): Tensor4D => tf.avgPool(x, 2, 2, "valid") as Tensor4D;

/**
 * Bilinear ×2 with half-pixel centres along `axis` (1 = H, 2 = W): outputs 2i, 2i+1 sample i − ¼ and i + ¼,
 * i.e. ¼·x[i−1] + ¾·x[i] and ¾·x[i] + ¼·x[i+1], with the edge sample repeated beyond the border (as PyTorch clamps).
 */
function up1d(x: Tensor4D, axis: 1 | 2): Tensor4D {
  return tf.tidy(() => {
    const n = x.shape[axis];
    const pads: [number, number][] = [
      [0, 0],
      [0, 0],
      [0, 0],
      [0, 0],
    ];
    pads[axis] = [1, 1];
    const p = tf.mirrorPad(x, pads, "symmetric");
    const at = (from: number) => {
      const begin = [0, 0, 0, 0];
      const size = [-1, -1, -1, -1];
      begin[axis] = from;
      size[axis] = n;
      return tf.slice(p, begin, size);
    };
    const [prev, mid, next] = [at(0), at(1), at(2)];
    const even = tf.add(tf.mul(0.25, prev), tf.mul(0.75, mid));
    const odd = tf.add(tf.mul(0.75, mid), tf.mul(0.25, next));
    const shape = [...x.shape] as [number, number, number, number];
    shape[axis] = 2 * n;
    return tf.reshape(tf.stack([even, odd], axis + 1), shape) as Tensor4D;
  });
}

/** kornia's pyrup: bilinear ×2, then the blur. */
const pyrUp = (x: Tensor4D): Tensor4D => tf.tidy(() => blur(up1d(up1d(x, 1), 2)));

const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;

/** Throws unless a [B, H, W, C] batch has a Laplacian pyramid of `levels` levels without padding. */
export function checkPyramidSize(shape: readonly number[], levels: number): void {
  const [, h, w] = shape as [number, number, number];
  const f = 2 ** (levels - 1);
  // The smallest blurred image is twice the coarsest level (an even size), and reflect padding by 2 needs ≥ 3.
  const smallest = levels === 1 ? 1 : 2 * f;
  if (h % f !== 0 || w % f !== 0 || Math.min(h, w) < smallest || !(isPowerOfTwo(h) || isPowerOfTwo(w))) {
    throw new Error(
      `fdg: levels: ${levels} pyramid levels need H and W divisible by ${f}, at least ${smallest}, and one of ` +
        `them a power of two; the images are ${h}×${w}`,
    );
  }
}

/** Laplacian pyramid [L_0 (finest band), …, L_{levels−1} (the coarsest Gaussian level)]. */
export function laplacianPyramid(x: Tensor4D, levels: number): Tensor4D[] {
  checkPyramidSize(x.shape, levels);
  return tf.tidy(() => {
    const gauss = [x];
    for (let i = 1; i < levels; i++) gauss.push(down(blur(gauss[i - 1]!)));
    return gauss.map((g, i) =>
      i === levels - 1 ? tf.clone(g) : (tf.sub(g, pyrUp(gauss[i + 1]!)) as Tensor4D),
    );
  });
}

/** The inverse of laplacianPyramid: from the coarsest level, blur(up(·)) and add the next band. */
export function fromPyramid(pyramid: readonly Tensor4D[]): Tensor4D {
  return tf.tidy(() => {
    let img = pyramid[pyramid.length - 1]!;
    for (let i = pyramid.length - 2; i >= 0; i--) img = tf.add(pyrUp(img), pyramid[i]!) as Tensor4D;
    return img;
  });
}

const sampleNorm = (v: Tensor4D) => tf.sqrt(tf.sum(tf.square(v), [1, 2, 3], true));

/** The FDG combination of one batch (the opening comment's g). */
export function fdgCombine(
  c: Tensor4D,
  u: Tensor4D,
  scales: readonly number[],
  parallelWeights?: readonly number[],
): Tensor4D {
  return tf.tidy(() => {
    const cp = laplacianPyramid(c, scales.length);
    const up = laplacianPyramid(u, scales.length);
    const guided = scales.map((s, i) => {
      const [ci, ui] = [cp[i]!, up[i]!];
      if (s === 1) return ci;
      let shift = tf.sub(ci, ui) as Tensor4D;
      const w = parallelWeights?.[i] ?? 1;
      if (w !== 1) {
        // torch's F.normalize: v / max(‖v‖, 1e-12).
        const unit = tf.div(ci, tf.maximum(sampleNorm(ci), 1e-12));
        const parallel = tf.mul(tf.sum(tf.mul(shift, unit), [1, 2, 3], true), unit);
        shift = tf.add(tf.mul(w, parallel), tf.sub(shift, parallel)) as Tensor4D;
      }
      return tf.add(ui, tf.mul(s, shift)) as Tensor4D;
    });
    return fromPyramid(guided);
  });
}

/** The per-level scales of a config: s_0 = scale, s_1 … s_{L−1} = lowScale. */
export const levelScales = (c: FdgConfig): number[] => [
  c.scale,
  ...Array<number>(c.levels - 1).fill(c.lowScale),
];

export const fdgStrategy: StrategyDef<FdgConfig> = {
  kind: "fdg",
  summary: "cfg per Laplacian-pyramid level with its own scale (high frequencies strong, low ones gentle)",
  citation:
    "Sadat et al. 2025 (Guidance in the Frequency Domain Enables High-Fidelity Sampling at Low CFG Scales) Alg. 2",
  example: { kind: "fdg", scale: 5, lowScale: 2 },
  schema: () => fdgSchema,
  requires: () => ["model", "encode"],
  build: (config, models) => ({
    config,
    bind: (prompts) =>
      pairGuided({
        kind: "fdg",
        models,
        prompts,
        otherPrompts: unconditionalPrompts(models, prompts.length),
        enabled: config.scale !== 1 || config.lowScale !== 1,
        window: config,
        combine: (c, u) =>
          withOut(
            c,
            fdgCombine(
              c.out,
              u.out,
              levelScales(config),
              levelScales(config).map(() => config.parallelWeight),
            ),
          ),
      }),
  }),
  neutral: (config) => ({ config: { ...config, scale: 1, lowScale: 1 }, equals: "conditional" }),
};
