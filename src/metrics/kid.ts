// Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs", eq. 3 with the cubic polynomial kernel
// of §4): the unbiased estimator of the squared MMD between generated and real features,
//   k(x, y) = (xᵀy / d + 1)³
//   MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m−1)) Σ_{i≠j} k(y_i, y_j) − 2/m² Σ_{i,j} k(x_i, y_j)
// averaged over random subsets of m samples from each set, as clean-fid's kernel_distance and torchmetrics'
// KernelInceptionDistance do (100 subsets of 1000; the mean and, in torchmetrics, the population std over
// subsets). Unlike FD it has no small-N bias, which is why it sits beside FD on cells of tens of samples.
import { hashSeed, Rng } from "../data/rng.ts";
import { dimOf, type FeatureSet } from "./linalg.ts";

export interface Kid {
  /** Mean of the unbiased MMD² over subsets. */
  value: number;
  /** Population std over subsets (torchmetrics); NaN when every subset is the whole of both sets. */
  std: number;
  /** Subset size used: min(subsetSize, |x|, |y|). */
  m: number;
}

/** The cubic polynomial kernel of KID, (aᵀb / d + 1)³. */
export function polyKernel(a: ArrayLike<number>, b: ArrayLike<number>, d: number): number {
  let s = 0;
  for (let k = 0; k < d; k++) s += a[k]! * b[k]!;
  const u = s / d + 1;
  return u * u * u;
}

/** Unbiased MMD² of two equal-size sets (Bińkowski et al. 2018, eq. 3). */
export function mmd2Unbiased(x: FeatureSet, y: FeatureSet): number {
  const m = x.length;
  if (y.length !== m) throw new Error(`kid: subsets differ in size (${m} vs ${y.length})`);
  if (m < 2) throw new Error("kid: need at least 2 samples per set");
  const d = x[0]!.length;
  let kxx = 0;
  let kyy = 0;
  let kxy = 0;
  for (let i = 0; i < m; i++) {
    for (let j = i + 1; j < m; j++) {
      kxx += polyKernel(x[i]!, x[j]!, d);
      kyy += polyKernel(y[i]!, y[j]!, d);
    }
    for (let j = 0; j < m; j++) kxy += polyKernel(x[i]!, y[j]!, d);
  }
  return (2 * (kxx + kyy)) / (m * (m - 1)) - (2 * kxy) / (m * m);
}

function subset(set: FeatureSet, m: number, rng: Rng): FeatureSet {
  if (m === set.length) return set;
  // Partial Fisher–Yates: m distinct indices, as numpy's choice(replace=False) draws.
  const idx = Array.from(set, (_, i) => i);
  for (let i = 0; i < m; i++) {
    const j = i + rng.int(idx.length - i);
    [idx[i], idx[j]] = [idx[j]!, idx[i]!];
  }
  return idx.slice(0, m).map((i) => set[i]!);
}

/**
 * KID of generated features `x` against real features `y`: 100 subsets of min(subsetSize, |x|, |y|) samples from
 * each (torchmetrics' defaults: 100 subsets, subset size 1000). When the subset size equals both set sizes every
 * subset is the whole data, the estimate is the plain U-statistic and the subset std carries nothing (NaN).
 */
export function kernelInceptionDistance(
  x: FeatureSet,
  y: FeatureSet,
  opts: { subsets?: number; subsetSize?: number; seed?: number } = {},
): Kid {
  if (dimOf(x, "kid (generated)") !== dimOf(y, "kid (real)"))
    throw new Error("kid: generated and real features differ in dimension");
  const m = Math.min(opts.subsetSize ?? 1000, x.length, y.length);
  if (m < 2) throw new Error(`kid: need at least 2 samples in each set (got ${x.length} and ${y.length})`);
  if (m === x.length && m === y.length) return { value: mmd2Unbiased(x, y), std: Number.NaN, m };
  const subsets = opts.subsets ?? 100;
  const rng = new Rng(hashSeed(opts.seed ?? 0, "kid"));
  const values: number[] = [];
  for (let s = 0; s < subsets; s++) values.push(mmd2Unbiased(subset(x, m, rng), subset(y, m, rng)));
  const mean = values.reduce((a, b) => a + b, 0) / subsets;
  const std = Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / subsets);
  return { value: mean, std, m };
}
