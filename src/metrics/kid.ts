// Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs", eq. 3 with the cubic polynomial kernel
// of §4): the unbiased estimator of the squared MMD between generated and real features,
//   k(x, y) = (xᵀy / d + 1)³
//   MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m−1)) Σ_{i≠j} k(y_i, y_j) − 2/m² Σ_{i,j} k(x_i, y_j)
// averaged over random subsets of m samples from each set, as clean-fid's kernel_distance and torchmetrics'
// KernelInceptionDistance do (100 subsets of 1000; the mean and, in torchmetrics, the population std over
// subsets). Unlike FD it has no small-N bias, which is why it sits beside FD on cells of tens of samples.
import { hashSeed, Rng } from "../util/rng.ts";
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

function groupSums(a: FeatureSet, ga: readonly string[], b: FeatureSet, gb: readonly string[], d: number) {
  const sums = new Map<string, number>();
  for (let i = 0; i < a.length; i++) {
    for (let j = 0; j < b.length; j++) {
      const key = `${ga[i]}\u0000${gb[j]}`;
      sums.set(key, (sums.get(key) ?? 0) + polyKernel(a[i]!, b[j]!, d));
    }
  }
  return sums;
}

/** E k(x, x') of one set, prompt-stratified (see src/stats/estimators.ts, uTerm, which resamples the same). */
function stratifiedSelf(x: FeatureSet, groups: readonly string[], d: number): number {
  const cnt = new Map<string, number>();
  for (const g of groups) cnt.set(g, (cnt.get(g) ?? 0) + 1);
  const sums = groupSums(x, groups, x, groups, d);
  const diag = new Map<string, number>();
  x.forEach((v, i) => {
    diag.set(groups[i]!, (diag.get(groups[i]!) ?? 0) + polyKernel(v, v, d));
  });
  let num = 0;
  for (const [key, s] of sums) {
    const [a, b] = key.split("\u0000") as [string, string];
    if (a !== b) num += s;
    else num += (cnt.get(a)! / (cnt.get(a)! - 1)) * (s - diag.get(a)!);
  }
  return num / (x.length * x.length);
}

/**
 * KID for a sweep's prompt-stratified sets: `x` and `y` hold n_g samples of each prompt g (their prompt ids in
 * `gx`, `gy`). The plain estimator leaves out the pairs (x_i, x_i) and so under-weights same-prompt pairs,
 * biasing MMD² low when samples of one prompt resemble each other; here every pair of prompts carries its
 * share, same-prompt pairs at their mean over distinct pairs (src/stats/estimators.ts, uTerm). Falls back to the
 * plain estimator when some prompt has a single sample in either set.
 */
export function stratifiedKid(
  x: FeatureSet,
  gx: readonly string[],
  y: FeatureSet,
  gy: readonly string[],
): number {
  const d = dimOf(x, "kid (generated)");
  if (dimOf(y, "kid (real)") !== d) throw new Error("kid: generated and real features differ in dimension");
  const single = (gs: readonly string[]) => {
    const c = new Map<string, number>();
    for (const g of gs) c.set(g, (c.get(g) ?? 0) + 1);
    return [...c.values()].some((n) => n < 2);
  };
  if (single(gx) || single(gy))
    return kernelInceptionDistance(x, y, { subsetSize: Math.max(x.length, y.length) }).value;
  let cross = 0;
  for (const s of groupSums(x, gx, y, gy, d).values()) cross += s;
  return stratifiedSelf(x, gx, d) + stratifiedSelf(y, gy, d) - (2 * cross) / (x.length * y.length);
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
