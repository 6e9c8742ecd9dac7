// Prompt accuracy by the exact oracle, the GenEval-style fidelity measure of the embedded world: the fraction of
// samples whose objects meet every constraint of their prompt, overall, per attribute (which constraint kinds
// fail: a colour error and a count error call for different fixes) and per suite.
import { ATTRIBUTES, type Attribute, score } from "../data/oracle.ts";
import type { SuiteName } from "../data/suites.ts";
import type { SceneSpec } from "../data/world.ts";

export interface ScoredPrompt {
  /** Samples of one prompt share it (e.g. the suite prompt id). */
  id: string;
  spec: SceneSpec;
  suite?: SuiteName | string;
}

export interface AccuracyTally {
  n: number;
  /** Fraction fully correct. */
  accuracy: number;
  /** Fraction passing each attribute's checks (a prompt stating no such constraint passes). */
  attributes: Record<Attribute, number>;
}

export interface PromptAccuracy extends AccuracyTally {
  /** Per suite, for prompts that name one. */
  suites: Record<string, AccuracyTally>;
  /** Per prompt id, in order of first appearance. */
  perPrompt: Map<string, AccuracyTally>;
  /** Per image, in input order: whether it is fully correct and which attributes failed. */
  perImage: { correct: boolean; failed: Attribute[] }[];
}

class Tally {
  n = 0;
  correct = 0;
  attrs = Object.fromEntries(ATTRIBUTES.map((a) => [a, 0])) as Record<Attribute, number>;
  add(correct: boolean, passed: Record<Attribute, boolean>) {
    this.n++;
    if (correct) this.correct++;
    for (const a of ATTRIBUTES) if (passed[a]) this.attrs[a]++;
  }
  result(): AccuracyTally {
    const n = this.n;
    return {
      n,
      accuracy: n ? this.correct / n : Number.NaN,
      attributes: Object.fromEntries(
        ATTRIBUTES.map((a) => [a, n ? this.attrs[a] / n : Number.NaN]),
      ) as Record<Attribute, number>,
    };
  }
}

/**
 * Wilson score interval of a binomial proportion (z = 1.96: 95%). A sweep cell of 32 samples at 95% accuracy has
 * an interval of about ±8 points, so a gap between two cells means little without it; unlike the normal
 * approximation it stays inside [0, 1] and is not degenerate at 0% or 100%.
 */
export function wilsonInterval(correct: number, n: number, z = 1.96): [number, number] {
  if (!(n > 0) || correct < 0 || correct > n) {
    throw new Error(`wilsonInterval: expected 0 <= correct <= n and n > 0, got ${correct} of ${n}`);
  }
  const p = correct / n;
  const z2 = z * z;
  const centre = (p + z2 / (2 * n)) / (1 + z2 / n);
  const half = (z / (1 + z2 / n)) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}

/**
 * Exact two-sided McNemar test of paired binary outcomes (McNemar 1947, the exact binomial form): `gained` pairs
 * are right only under the first condition, `lost` only under the second. When two guidance settings sample from
 * the same x_T and step noise, the concordant pairs say nothing about the difference, so this is the test that
 * uses the pairing; two unpaired Wilson intervals overlap long after a paired gap is clear.
 */
export function mcnemarExact(gained: number, lost: number): number {
  if (!Number.isInteger(gained) || !Number.isInteger(lost) || gained < 0 || lost < 0) {
    throw new Error(`mcnemarExact: expected non-negative integer counts, got ${gained} and ${lost}`);
  }
  const n = gained + lost;
  if (n === 0) return 1;
  // P(X <= k) for X ~ Binomial(n, 1/2), summed in log space so large n does not underflow 2^-n.
  let logTerm = -n * Math.LN2;
  let tail = 0;
  for (let i = 0; i <= Math.min(gained, lost); i++) {
    tail += Math.exp(logTerm);
    logTerm += Math.log((n - i) / (i + 1));
  }
  return Math.min(1, 2 * tail);
}

/** Oracle accuracy of HWC RGB images in [0, 1] (`signed`: in [-1, 1]), image i scored against prompts[i]. */
export function promptAccuracy(
  images: readonly Float32Array[],
  prompts: readonly ScoredPrompt[],
  opts: { size?: number; signed?: boolean } = {},
): PromptAccuracy {
  if (images.length !== prompts.length) {
    throw new Error(`prompt accuracy: ${images.length} images for ${prompts.length} prompts`);
  }
  if (images.length === 0) throw new Error("prompt accuracy: no images");
  const all = new Tally();
  const suites = new Map<string, Tally>();
  const perPrompt = new Map<string, Tally>();
  const perImage: PromptAccuracy["perImage"] = [];
  images.forEach((img, i) => {
    const p = prompts[i]!;
    const s = score(img, p.spec, { ...opts });
    const passed = Object.fromEntries(ATTRIBUTES.map((a) => [a, s[a]])) as Record<Attribute, boolean>;
    all.add(s.correct, passed);
    const into = (map: Map<string, Tally>, key: string) => {
      let t = map.get(key);
      if (!t) {
        t = new Tally();
        map.set(key, t);
      }
      t.add(s.correct, passed);
    };
    if (p.suite !== undefined) into(suites, p.suite);
    into(perPrompt, p.id);
    perImage.push({ correct: s.correct, failed: ATTRIBUTES.filter((a) => !s[a]) });
  });
  return {
    ...all.result(),
    suites: Object.fromEntries([...suites].map(([k, t]) => [k, t.result()])),
    perPrompt: new Map([...perPrompt].map(([k, t]) => [k, t.result()])),
    perImage,
  };
}
