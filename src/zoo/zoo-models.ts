// The pieces of the zoo's model bag that need no file system: the world's prompt encoding and the v→ε view of a
// v-predicting denoiser. loadZoo (Node) and the browser explorer (src/explore) build their bags from these, so a
// prompt and a seed reach the samplers as the same tensors on both.
import { type Tensor, type Tensor2D, type Tensor4D, tf } from "../core/engine.ts";
import { PAD_ID, tokenize } from "../data/world.ts";
import type { Conditioning, ModelFn } from "../strategies/strategy.ts";

/** Prompts → the zoo denoiser's conditioning: world token ids [B, ctx] and a 1/0 mask of real tokens. */
export function encodeWorld(prompts: readonly string[], ctx: number): Conditioning {
  const ids = new Int32Array(prompts.length * ctx);
  for (const [i, p] of prompts.entries()) ids.set(tokenize(p, ctx), i * ctx);
  const mask = Float32Array.from(ids, (id) => (id === PAD_ID ? 0 : 1));
  return {
    tokens: tf.tensor2d(ids, [prompts.length, ctx], "int32") as Tensor2D,
    mask: tf.tensor2d(mask, [prompts.length, ctx]) as Tensor2D,
  };
}

/**
 * A v-predicting denoiser (Salimans & Ho 2022) as the ε-predictor every sampler and strategy expects:
 * ε = √ᾱ_t·v + √(1 − ᾱ_t)·x_t at the original timesteps t (v = √ᾱ·ε − √(1−ᾱ)·x0 with x_t = √ᾱ·x0 + √(1−ᾱ)·ε).
 * Exact in float32 even at t = 999 (√ᾱ ≈ 1.6e-3): the sampler's x0 = (x_t − √(1−ᾱ)·ε)/√ᾱ loses ~1e-4.
 */
export function epsFromV(model: ModelFn, alphasCumprod: Float64Array): ModelFn {
  const sqrtA = Float32Array.from(alphasCumprod, Math.sqrt);
  const sqrtOneMinusA = Float32Array.from(alphasCumprod, (a) => Math.sqrt(1 - a));
  const logSigma = Float32Array.from(alphasCumprod, (a) => Math.log(Math.sqrt((1 - a) / a)));
  const last = alphasCumprod.length - 1;
  return (x, t, cond) => {
    const p = model(x, t, cond);
    const eps = tf.tidy(() => {
      const col = (v: Tensor) => tf.reshape(v, [-1, 1, 1, 1]);
      const idx = tf.cast(t, "int32");
      const at = (table: Float32Array) => col(tf.gather(tf.tensor1d(table), idx));
      const tabled = tf.add(tf.mul(at(sqrtA), p.out), tf.mul(at(sqrtOneMinusA), x)) as Tensor4D;
      if (t.dtype === "int32") return tabled;
      // A fractional t (σ-space samplers, core/samplers/sigma.ts) sits between table entries with log σ
      // interpolated linearly; ᾱ = 1/(1 + σ²) there, so that x_t and ε agree on the noise level. Integral rows keep
      // the table's values exactly.
      const tf32 = tf.cast(t, "float32");
      const lo = tf.clipByValue(tf.floor(tf32), 0, last);
      const w = tf.sub(tf32, lo);
      const ls = (i: Tensor) => tf.gather(tf.tensor1d(logSigma), tf.cast(i, "int32"));
      const hi = tf.clipByValue(tf.ceil(tf32), 0, last);
      const logS = tf.add(tf.mul(ls(lo), tf.sub(1, w)), tf.mul(ls(hi), w));
      const abar = col(tf.div(1, tf.add(1, tf.exp(tf.mul(logS, 2)))));
      const between = tf.add(tf.mul(tf.sqrt(abar), p.out), tf.mul(tf.sqrt(tf.sub(1, abar)), x)) as Tensor4D;
      return tf.where(tf.broadcastTo(col(tf.equal(w, 0)), x.shape), tabled, between) as Tensor4D;
    });
    p.out.dispose();
    // varValues passes through untouched: tf.keep here would exempt it from the caller's tidy, and a strategy
    // that slices out the half it needs (cfg) relies on that tidy to free the rest.
    return p.varValues ? { out: eps, kind: "eps", varValues: p.varValues } : { out: eps, kind: "eps" };
  };
}
