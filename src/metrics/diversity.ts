// Within-prompt diversity: guidance trades diversity for fidelity (GLIDE §4.1), and precision/recall measure the
// diversity of a whole cell against real data, not of the samples one prompt gets. These measure the latter:
// mean pairwise distance among the samples sharing a prompt, averaged over prompts with at least two samples.
import { cosine, type FeatureSet, mean, sqDist, type Vector } from "./linalg.ts";

export interface Diversity {
  /** Mean over prompts with ≥ 2 samples; NaN when there are none. */
  value: number;
  /** Per prompt key (only those with ≥ 2 samples). */
  perGroup: Map<string, number>;
}

function grouped(
  items: readonly Vector[],
  groups: readonly string[],
  distance: (a: Vector, b: Vector) => number,
): Diversity {
  if (items.length !== groups.length) {
    throw new Error(`diversity: ${items.length} samples but ${groups.length} group keys`);
  }
  const members = new Map<string, Vector[]>();
  items.forEach((v, i) => {
    const g = groups[i]!;
    const list = members.get(g);
    if (list) list.push(v);
    else members.set(g, [v]);
  });
  const perGroup = new Map<string, number>();
  for (const [g, vs] of members) {
    if (vs.length < 2) continue;
    let sum = 0;
    let pairs = 0;
    for (let i = 0; i < vs.length; i++) {
      for (let j = i + 1; j < vs.length; j++) {
        sum += distance(vs[i]!, vs[j]!);
        pairs++;
      }
    }
    perGroup.set(g, sum / pairs);
  }
  return { value: mean([...perGroup.values()]), perGroup };
}

/** Mean pairwise cosine distance (1 − cos) of embeddings within each prompt group. */
export function embeddingDiversity(embeddings: FeatureSet, groups: readonly string[]): Diversity {
  return grouped(embeddings, groups, (a, b) => 1 - cosine(a, b));
}

/**
 * Mean pairwise pixel L2 / sqrt(dims) within each prompt group: the RMS per-value difference, so that the number
 * does not grow with image size. Model-free, hence a check on the embedding-based one.
 */
export function pixelDiversity(images: readonly Float32Array[], groups: readonly string[]): Diversity {
  return grouped(images, groups, (a, b) => {
    if (a.length !== b.length) throw new Error("pixel diversity: images differ in size");
    return Math.sqrt(sqDist(a, b) / a.length);
  });
}
