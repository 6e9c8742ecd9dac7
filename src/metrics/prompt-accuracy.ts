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
