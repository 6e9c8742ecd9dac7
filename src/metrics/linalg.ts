// Small float64 linear algebra for metrics on features of at most a few hundred dimensions. Metrics are computed
// once per sweep cell on a few thousand vectors, so plain loops in float64 beat moving data through the tensor
// engine (float32 on wasm), whose rounding would swamp a Fréchet distance of near-identical sets.

/** One feature vector (a row); Float32Array rows from `dataSync()` are accepted as they are. */
export type Vector = ArrayLike<number>;
/** A set of feature vectors of equal length. */
export type FeatureSet = readonly Vector[];

/** Split a row-major [n, dim] buffer (e.g. a tensor's `dataSync()`) into rows without copying. */
export function rowsOf(flat: Float32Array | Float64Array, dim: number): Vector[] {
  if (dim <= 0 || flat.length % dim !== 0)
    throw new Error(`rowsOf: ${flat.length} values are not rows of ${dim}`);
  const out: Vector[] = [];
  for (let i = 0; i < flat.length; i += dim) out.push(flat.subarray(i, i + dim));
  return out;
}

/** The common dimension of a non-empty set, or an error naming `what`. */
export function dimOf(set: FeatureSet, what: string): number {
  const first = set[0];
  if (!first) throw new Error(`${what}: empty feature set`);
  const d = first.length;
  set.forEach((v, i) => {
    if (v.length !== d) throw new Error(`${what}: vector ${i} has ${v.length} values, vector 0 has ${d}`);
  });
  return d;
}

export function dot(a: Vector, b: Vector): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

export function norm(a: Vector): number {
  return Math.sqrt(dot(a, a));
}

/** Cosine similarity; 0 when either vector is zero (an all-zero embedding says nothing, not "orthogonal"). */
export function cosine(a: Vector, b: Vector): number {
  const n = norm(a) * norm(b);
  return n > 0 ? dot(a, b) / n : 0;
}

export function sqDist(a: Vector, b: Vector): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    s += d * d;
  }
  return s;
}

export function mean(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}

/** Dense symmetric-or-not square matrix, row-major float64. */
export interface Matrix {
  n: number;
  data: Float64Array;
}

export function matrix(n: number, data?: readonly number[] | Float64Array): Matrix {
  if (data && data.length !== n * n) throw new Error(`matrix: ${data.length} values for ${n}x${n}`);
  return { n, data: data ? Float64Array.from(data) : new Float64Array(n * n) };
}

export function matmul(a: Matrix, b: Matrix): Matrix {
  const n = a.n;
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < n; k++) {
      const aik = a.data[i * n + k]!;
      if (aik === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j]! += aik * b.data[k * n + j]!;
    }
  }
  return { n, data: out };
}

export function trace(a: Matrix): number {
  let s = 0;
  for (let i = 0; i < a.n; i++) s += a.data[i * a.n + i]!;
  return s;
}

/** Mean vector and unbiased covariance (n − 1, as numpy's `np.cov` in the reference FID code) in float64. */
export function meanAndCovariance(set: FeatureSet, what = "covariance"): { mu: Float64Array; sigma: Matrix } {
  const d = dimOf(set, what);
  const n = set.length;
  const mu = new Float64Array(d);
  for (const v of set) for (let j = 0; j < d; j++) mu[j]! += v[j]!;
  for (let j = 0; j < d; j++) mu[j]! /= n;
  const sigma = new Float64Array(d * d);
  const c = new Float64Array(d);
  for (const v of set) {
    for (let j = 0; j < d; j++) c[j] = v[j]! - mu[j]!;
    for (let i = 0; i < d; i++) {
      const ci = c[i]!;
      if (ci === 0) continue;
      for (let j = i; j < d; j++) sigma[i * d + j]! += ci * c[j]!;
    }
  }
  const denom = n > 1 ? n - 1 : 1;
  for (let i = 0; i < d; i++) {
    for (let j = i; j < d; j++) {
      const s = sigma[i * d + j]! / denom;
      sigma[i * d + j] = s;
      sigma[j * d + i] = s;
    }
  }
  return { mu, sigma: { n: d, data: sigma } };
}

/**
 * Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations: slow (O(n³) per sweep) but accurate to
 * float64 rounding on every eigenvalue, small ones included, which is what a trace of square roots needs.
 * Returns eigenvalues and eigenvectors as the columns of `vectors`.
 */
export function symmetricEigen(m: Matrix, maxSweeps = 60): { values: Float64Array; vectors: Matrix } {
  const n = m.n;
  const a = Float64Array.from(m.data);
  // Symmetrise: covariance products are symmetric only up to rounding.
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const s = (a[i * n + j]! + a[j * n + i]!) / 2;
      a[i * n + j] = s;
      a[j * n + i] = s;
    }
  }
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  let scale = 0;
  for (let i = 0; i < n * n; i++) scale = Math.max(scale, Math.abs(a[i]!));
  const tol = scale * 1e-15;
  for (let sweep = 0; sweep < maxSweeps; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off = Math.max(off, Math.abs(a[p * n + q]!));
    if (off <= tol) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q]!;
        if (Math.abs(apq) <= tol) continue;
        const app = a[p * n + p]!;
        const aqq = a[q * n + q]!;
        // The smaller root of t² + 2θt − 1 = 0 keeps the rotation angle ≤ π/4, which is what makes Jacobi stable.
        const theta = (aqq - app) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p]!;
          const akq = a[k * n + q]!;
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k]!;
          const aqk = a[q * n + k]!;
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p]!;
          const vkq = v[k * n + q]!;
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = a[i * n + i]!;
  return { values, vectors: { n, data: v } };
}

/**
 * Principal square root of a symmetric positive semi-definite matrix. Eigenvalues below zero are rounding noise
 * of a PSD matrix (a covariance from fewer samples than dimensions is singular) and are clamped to zero.
 */
export function sqrtPsd(m: Matrix): Matrix {
  const { values, vectors } = symmetricEigen(m);
  const n = m.n;
  const out = new Float64Array(n * n);
  for (let k = 0; k < n; k++) {
    const r = Math.sqrt(Math.max(0, values[k]!));
    if (r === 0) continue;
    for (let i = 0; i < n; i++) {
      const vik = vectors.data[i * n + k]! * r;
      if (vik === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j]! += vik * vectors.data[j * n + k]!;
    }
  }
  return { n, data: out };
}
