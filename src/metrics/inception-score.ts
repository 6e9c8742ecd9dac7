// Inception score (Salimans et al. 2016) from class probabilities: IS = exp(E_x KL(p(y|x) ‖ p(y))). High when
// each sample is confidently one class and the classes are evenly used; it ranges from 1 to the number of
// classes. The caller supplies the probabilities (here: the noised classifier at t = 0 over the world's 24
// colour-shape classes, in place of Inception's 1000 ImageNet classes).
import { dimOf, type FeatureSet } from "./linalg.ts";

export interface InceptionScore {
  /** Mean over splits. */
  score: number;
  /** Standard deviation over splits (0 with one split). */
  std: number;
}

/** Row-wise softmax of logits in float64, for callers holding logits rather than probabilities. */
export function softmaxRows(logits: FeatureSet): Float64Array[] {
  return logits.map((row) => {
    let max = Number.NEGATIVE_INFINITY;
    for (let i = 0; i < row.length; i++) max = Math.max(max, row[i]!);
    const out = new Float64Array(row.length);
    let sum = 0;
    for (let i = 0; i < row.length; i++) {
      out[i] = Math.exp(row[i]! - max);
      sum += out[i]!;
    }
    for (let i = 0; i < row.length; i++) out[i]! /= sum;
    return out;
  });
}

function scoreOf(probs: FeatureSet, c: number): number {
  const marginal = new Float64Array(c);
  for (const p of probs) for (let j = 0; j < c; j++) marginal[j]! += p[j]!;
  for (let j = 0; j < c; j++) marginal[j]! /= probs.length;
  let kl = 0;
  for (const p of probs) {
    for (let j = 0; j < c; j++) {
      const pj = p[j]!;
      // 0·log 0 = 0; pj > 0 implies marginal[j] > 0.
      if (pj > 0) kl += pj * (Math.log(pj) - Math.log(marginal[j]!));
    }
  }
  return Math.exp(kl / probs.length);
}

/**
 * IS of class probabilities (rows summing to 1). `splits` > 1 reports the mean and spread over equal chunks, as
 * the reference implementation's 10 splits do; one split (default) uses every sample for the marginal.
 */
export function inceptionScore(probs: FeatureSet, splits = 1): InceptionScore {
  const c = dimOf(probs, "inception score");
  probs.forEach((p, i) => {
    let s = 0;
    for (let j = 0; j < c; j++) {
      if (!(p[j]! >= 0)) throw new Error(`inception score: row ${i} has a negative or NaN probability`);
      s += p[j]!;
    }
    if (Math.abs(s - 1) > 1e-3) throw new Error(`inception score: row ${i} sums to ${s}, not 1 (logits?)`);
  });
  if (!Number.isInteger(splits) || splits < 1 || splits > probs.length) {
    throw new Error(`inception score: ${splits} splits of ${probs.length} rows`);
  }
  const scores: number[] = [];
  for (let k = 0; k < splits; k++) {
    const from = Math.floor((k * probs.length) / splits);
    const to = Math.floor(((k + 1) * probs.length) / splits);
    scores.push(scoreOf(probs.slice(from, to), c));
  }
  const m = scores.reduce((a, b) => a + b, 0) / splits;
  const v = scores.reduce((a, b) => a + (b - m) ** 2, 0) / splits;
  return { score: m, std: Math.sqrt(v) };
}
