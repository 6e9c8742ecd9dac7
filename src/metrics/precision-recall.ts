// Improved precision and recall (Kynkäänniemi et al. 2019, arXiv 1904.06991), the fidelity/diversity pair of
// GLIDE's Fig. 6a. Each set's manifold is the union of balls around its vectors, each ball reaching that vector's
// k-th nearest neighbour within its own set:
//   precision = fraction of generated vectors inside the real manifold (fidelity)
//   recall    = fraction of real vectors inside the generated manifold (coverage, i.e. diversity)
import { dimOf, type FeatureSet, sqDist } from "./linalg.ts";

export interface PrecisionRecall {
  precision: number;
  recall: number;
}

/** Squared distance from each vector to its k-th nearest other vector of the same set. */
export function kthNeighbourRadii(set: FeatureSet, k: number): Float64Array {
  if (set.length <= k)
    throw new Error(`precision/recall: ${set.length} vectors cannot have ${k} neighbours each`);
  const out = new Float64Array(set.length);
  const d = new Float64Array(set.length - 1);
  set.forEach((v, i) => {
    let m = 0;
    set.forEach((w, j) => {
      if (j !== i) d[m++] = sqDist(v, w);
    });
    out[i] = d.sort()[k - 1]!;
  });
  return out;
}

/** Fraction of `probes` lying in some ball (centre `centres[i]`, squared radius `radii[i]`). */
export function manifoldCoverage(probes: FeatureSet, centres: FeatureSet, radii: Float64Array): number {
  let inside = 0;
  for (const p of probes) {
    for (let i = 0; i < centres.length; i++) {
      if (sqDist(p, centres[i]!) <= radii[i]!) {
        inside++;
        break;
      }
    }
  }
  return inside / probes.length;
}

/** Improved precision and recall of `generated` against `real`, k = 3 as in the paper's default. */
export function precisionRecall(real: FeatureSet, generated: FeatureSet, k = 3): PrecisionRecall {
  if (dimOf(real, "precision/recall (real)") !== dimOf(generated, "precision/recall (generated)")) {
    throw new Error("precision/recall: real and generated features differ in dimension");
  }
  return {
    precision: manifoldCoverage(generated, real, kthNeighbourRadii(real, k)),
    recall: manifoldCoverage(real, generated, kthNeighbourRadii(generated, k)),
  };
}
