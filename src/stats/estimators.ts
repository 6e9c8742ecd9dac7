// Group-weighted forms of the metrics, for the prompt bootstrap. Each estimator is prepared once from a cell's
// observations (sums per prompt group), after which a replicate costs O(groups) or O(groups · d²) instead of a
// pass over the samples: a replicate with counts w_g is the multiset holding every sample of group g w_g times,
// and each estimator below equals the metric computed on that multiset (all-ones weights give the metric itself).
import { kthNeighbourRadii } from "../metrics/precision-recall.ts";
import { congruence, pivotedCholesky, symmetricEigenvalues } from "./eigen.ts";

export type Weights = ArrayLike<number>;

/** Mean of per-sample values (NaN values left out, e.g. samples outside a suite). */
export class MeanSeries {
  readonly sum: Float64Array;
  readonly cnt: Float64Array;
  constructor(values: ArrayLike<number>, groups: ArrayLike<number>, g: number) {
    this.sum = new Float64Array(g);
    this.cnt = new Float64Array(g);
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (!Number.isFinite(v)) continue;
      this.sum[groups[i]!]! += v;
      this.cnt[groups[i]!]!++;
    }
  }
  at(w: Weights): number {
    let s = 0;
    let n = 0;
    for (let k = 0; k < this.sum.length; k++) {
      s += w[k]! * this.sum[k]!;
      n += w[k]! * this.cnt[k]!;
    }
    return n > 0 ? s / n : Number.NaN;
  }
  get n(): number {
    return this.cnt.reduce((a, b) => a + b, 0);
  }
}

/** Mean over groups of a per-group statistic (within-prompt diversity): groups without a value are left out. */
export class GroupSeries {
  constructor(readonly values: Float64Array) {}
  at(w: Weights): number {
    let s = 0;
    let n = 0;
    for (let k = 0; k < this.values.length; k++) {
      const v = this.values[k]!;
      if (!Number.isFinite(v)) continue;
      s += w[k]! * v;
      n += w[k]!;
    }
    return n > 0 ? s / n : Number.NaN;
  }
}

export interface Gaussian {
  mu: Float64Array;
  /** d × d, row-major. */
  sigma: Float64Array;
}

/** Per-group first and second moments of features, for the mean and covariance of any replicate. */
export class MomentSums {
  readonly sum: Float64Array;
  readonly outer: Float64Array;
  readonly cnt: Float64Array;
  constructor(
    data: Float32Array,
    readonly d: number,
    groups: ArrayLike<number>,
    readonly g: number,
  ) {
    this.sum = new Float64Array(g * d);
    this.outer = new Float64Array(g * d * d);
    this.cnt = new Float64Array(g);
    const n = data.length / d;
    for (let i = 0; i < n; i++) {
      const k = groups[i]!;
      this.cnt[k]!++;
      const o = i * d;
      for (let a = 0; a < d; a++) {
        const xa = data[o + a]!;
        this.sum[k * d + a]! += xa;
        const base = k * d * d + a * d;
        for (let b = a; b < d; b++) this.outer[base + b]! += xa * data[o + b]!;
      }
    }
  }

  /** Mean and unbiased (W − 1) covariance of the weighted multiset, as np.cov on it. */
  gaussian(w: Weights): Gaussian {
    // Locals, and the upper triangle only: this runs once per cell and replicate.
    const { d, g, sum, outer, cnt } = this;
    const mu = new Float64Array(d);
    const sigma = new Float64Array(d * d);
    let n = 0;
    for (let k = 0; k < g; k++) {
      const wk = w[k]!;
      if (wk === 0) continue;
      n += wk * cnt[k]!;
      const sb = k * d;
      for (let a = 0; a < d; a++) mu[a]! += wk * sum[sb + a]!;
      const base = k * d * d;
      for (let a = 0; a < d; a++) {
        const row = a * d;
        for (let b = a; b < d; b++) sigma[row + b]! += wk * outer[base + row + b]!;
      }
    }
    for (let a = 0; a < d; a++) mu[a]! /= n;
    const denom = n > 1 ? n - 1 : 1;
    for (let a = 0; a < d; a++) {
      const ma = n * mu[a]!;
      for (let b = a; b < d; b++) {
        const v = (sigma[a * d + b]! - ma * mu[b]!) / denom;
        sigma[a * d + b] = v;
        sigma[b * d + a] = v;
      }
    }
    return { mu, sigma };
  }
}

/** A reference Gaussian with the factor its Fréchet distances need (computed once per replicate, shared by cells). */
export interface FactoredGaussian extends Gaussian {
  l: Float64Array;
  rank: number;
  trace: number;
}

export function factor(gs: Gaussian): FactoredGaussian {
  const d = gs.mu.length;
  const { l, rank } = pivotedCholesky(gs.sigma, d);
  let trace = 0;
  for (let i = 0; i < d; i++) trace += gs.sigma[i * d + i]!;
  return { ...gs, l, rank, trace };
}

/**
 * Fréchet distance ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1 Σ2)^{1/2} (Dowson & Landau 1982; Heusel et al. 2017,
 * eq. 6), the trace term as Σ √λ(Lᵀ Σ2 L) with Σ1 = L Lᵀ (same eigenvalues as Σ1 Σ2).
 */
export function frechet(ref: FactoredGaussian, gs: Gaussian): number {
  const d = ref.mu.length;
  let meanTerm = 0;
  let tr2 = 0;
  for (let i = 0; i < d; i++) {
    meanTerm += (ref.mu[i]! - gs.mu[i]!) ** 2;
    tr2 += gs.sigma[i * d + i]!;
  }
  let trSqrt = 0;
  if (ref.rank > 0) {
    const m = congruence(gs.sigma, ref.l, d, ref.rank);
    for (const v of symmetricEigenvalues(m, ref.rank)) trSqrt += Math.sqrt(Math.max(0, v));
  }
  return Math.max(0, meanTerm + ref.trace + tr2 - 2 * trSqrt);
}

/** KID's kernel (aᵀb / d + 1)³ summed over group pairs: sums[ga * g + gb]. */
export function kernelGroupSums(
  a: Float32Array,
  groupsA: ArrayLike<number>,
  b: Float32Array,
  groupsB: ArrayLike<number>,
  d: number,
  g: number,
): Float64Array {
  const na = a.length / d;
  const nb = b.length / d;
  const out = new Float64Array(g * g);
  for (let i = 0; i < na; i++) {
    const row = groupsA[i]! * g;
    for (let j = 0; j < nb; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += a[i * d + k]! * b[j * d + k]!;
      const u = s / d + 1;
      out[row + groupsB[j]!]! += u * u * u;
    }
  }
  return out;
}

/** Within-set kernel sums for KID's U-statistic: all pairs by group, the diagonal by group, and group sizes. */
export interface SelfKernel {
  pairs: Float64Array;
  diag: Float64Array;
  cnt: Float64Array;
}

export function selfKernel(x: Float32Array, groups: ArrayLike<number>, d: number, g: number): SelfKernel {
  const pairs = kernelGroupSums(x, groups, x, groups, d, g);
  const diag = new Float64Array(g);
  const cnt = new Float64Array(g);
  const n = x.length / d;
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += x[i * d + k]! ** 2;
    const u = s / d + 1;
    diag[groups[i]!]! += u * u * u;
    cnt[groups[i]!]!++;
  }
  return { pairs, diag, cnt };
}

/**
 * E k(x, x') of the weighted multiset, prompt-stratified: a sweep draws exactly n_g samples of each prompt g (and
 * its real set the same), not samples of the prompt mixture, so the plain U-statistic of MMD²_u (Bińkowski et al.
 * 2018, eq. 3), which leaves out the n pairs (x_i, x_i), under-weights same-prompt pairs against the cross term
 * and is biased low whenever samples of one prompt resemble each other (the run's real-vs-real KID comes out
 * negative). Here each pair of groups (g, h) carries its share p_g p_h (p_g = w_g n_g / W), with a group against
 * itself, and copies of one group against each other, at the mean over its distinct pairs (S_gg − D_g) /
 * (n_g (n_g − 1)); never k(x, x), so resampling adds no bias either. With one group this is the plain
 * U-statistic; with iid samples both are unbiased. Groups of one sample have no within-group mean: then the
 * plain U-statistic of the multiset is used.
 */
export function uTerm(s: SelfKernel, w: Weights): number {
  const g = s.cnt.length;
  let single = false;
  for (let a = 0; a < g; a++) if (w[a]! > 0 && s.cnt[a] === 1) single = true;
  let num = 0;
  let total = 0;
  let same = 0;
  for (let a = 0; a < g; a++) {
    const wa = w[a]!;
    const na = s.cnt[a]!;
    if (wa === 0 || na === 0) continue;
    total += wa * na;
    same += wa * wa * na;
    for (let b = 0; b < g; b++) if (b !== a) num += wa * w[b]! * s.pairs[a * g + b]!;
    const within = s.pairs[a * g + a]! - s.diag[a]!;
    num += single ? wa * wa * within : ((wa * wa * na) / (na - 1)) * within;
  }
  const pairs = single ? total * total - same : total * total;
  return pairs > 0 ? num / pairs : Number.NaN;
}

/** Mean of k over all cross pairs of two weighted multisets. */
export function crossTerm(sums: Float64Array, cntA: Float64Array, cntB: Float64Array, w: Weights): number {
  const g = cntA.length;
  let num = 0;
  let na = 0;
  let nb = 0;
  for (let a = 0; a < g; a++) {
    na += w[a]! * cntA[a]!;
    nb += w[a]! * cntB[a]!;
    if (w[a] === 0) continue;
    for (let b = 0; b < g; b++) num += w[a]! * w[b]! * sums[a * g + b]!;
  }
  return num / (na * nb);
}

/** Per-group sums for the Inception score (Salimans et al. 2016): class-probability sums and Σ p log p. */
export class IsSums {
  readonly psum: Float64Array;
  readonly plogp: Float64Array;
  readonly cnt: Float64Array;
  /** Σ_y p log p of each sample. */
  private readonly samplePlogp: Float64Array;
  constructor(
    private readonly probs: Float32Array,
    readonly c: number,
    groups: ArrayLike<number>,
    readonly g: number,
  ) {
    this.psum = new Float64Array(g * c);
    this.plogp = new Float64Array(g);
    this.cnt = new Float64Array(g);
    const n = probs.length / c;
    this.samplePlogp = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const k = groups[i]!;
      this.cnt[k]!++;
      for (let j = 0; j < c; j++) {
        const p = probs[i * c + j]!;
        this.psum[k * c + j]! += p;
        if (p > 0) {
          const t = p * Math.log(p);
          this.plogp[k]! += t;
          this.samplePlogp[i]! += t;
        }
      }
    }
  }

  /** IS with sample i weighted by counts[slotOf[i]]: a replicate of the within-group bootstrap (bootstrap.ts). */
  atSamples(counts: ArrayLike<number>, slotOf: Int32Array): number {
    const { c, probs } = this;
    let n = 0;
    let h = 0;
    const marg = new Float64Array(c);
    for (let i = 0; i < slotOf.length; i++) {
      const wi = counts[slotOf[i]!]!;
      if (wi === 0) continue;
      n += wi;
      h += wi * this.samplePlogp[i]!;
      for (let j = 0; j < c; j++) marg[j]! += wi * probs[i * c + j]!;
    }
    let cross = 0;
    for (let j = 0; j < c; j++) if (marg[j]! > 0) cross += marg[j]! * Math.log(marg[j]! / n);
    return Math.exp((h - cross) / n);
  }

  /** IS = exp(E_x KL(p(y|x) ‖ p(y))) = exp((Σ_x Σ_y p log p − Σ_y P_y log(P_y / W)) / W), P_y = Σ_x p(y|x). */
  at(w: Weights): number {
    const { c, g } = this;
    let n = 0;
    let h = 0;
    const marg = new Float64Array(c);
    for (let k = 0; k < g; k++) {
      const wk = w[k]!;
      if (wk === 0) continue;
      n += wk * this.cnt[k]!;
      h += wk * this.plogp[k]!;
      for (let j = 0; j < c; j++) marg[j]! += wk * this.psum[k * c + j]!;
    }
    let cross = 0;
    for (let j = 0; j < c; j++) if (marg[j]! > 0) cross += marg[j]! * Math.log(marg[j]! / n);
    return Math.exp((h - cross) / n);
  }
}

/**
 * Per-probe indicator of lying inside the k-NN manifold of `centres` (Kynkäänniemi et al. 2019, eq. 1): precision
 * is the mean over generated probes against the real manifold, recall the mean over real probes against the
 * generated one. Resampling the probes with the manifolds held at the full sets gives the interval conditional
 * on the manifolds (a resampled manifold would hold duplicate points, whose k-NN radii collapse).
 */
export function insideManifold(probes: Float32Array[], centres: Float32Array[], k: number): Float64Array {
  const radii = kthNeighbourRadii(centres, k);
  return Float64Array.from(probes, (p) => {
    for (let i = 0; i < centres.length; i++) {
      const c = centres[i]!;
      let s = 0;
      for (let j = 0; j < p.length; j++) s += (p[j]! - c[j]!) ** 2;
      if (s <= radii[i]!) return 1;
    }
    return 0;
  });
}
