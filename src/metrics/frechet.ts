// Fréchet distance between Gaussians fitted to two feature sets (FID when the features are Inception's; here the
// caller picks the extractor, e.g. the evaluation CLIP's image tower):
//   FD = ‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2})
// tr (Σ1 Σ2)^{1/2} is computed as tr (A Σ2 A)^{1/2} with A = Σ1^{1/2}: A Σ2 A is similar to Σ1 Σ2 (same
// eigenvalues) but symmetric PSD, so a symmetric eigen-solver applies and no complex square roots arise, unlike
// scipy's sqrtm on the non-symmetric product in the reference implementation.
import {
  type FeatureSet,
  type Matrix,
  matmul,
  meanAndCovariance,
  sqrtPsd,
  symmetricEigen,
  trace,
} from "./linalg.ts";

export interface GaussianStats {
  mu: ArrayLike<number>;
  sigma: Matrix;
}

export function gaussianStats(features: FeatureSet): GaussianStats {
  return meanAndCovariance(features, "frechet");
}

export function frechetFromStats(a: GaussianStats, b: GaussianStats): number {
  const d = a.mu.length;
  if (b.mu.length !== d || a.sigma.n !== d || b.sigma.n !== d) {
    throw new Error(`frechet: dimensions differ (${d} vs ${b.mu.length})`);
  }
  let meanTerm = 0;
  for (let i = 0; i < d; i++) {
    const diff = a.mu[i]! - b.mu[i]!;
    meanTerm += diff * diff;
  }
  const root = sqrtPsd(a.sigma);
  const { values } = symmetricEigen(matmul(matmul(root, b.sigma), root));
  let trSqrt = 0;
  for (const v of values) trSqrt += Math.sqrt(Math.max(0, v));
  const fd = meanTerm + trace(a.sigma) + trace(b.sigma) - 2 * trSqrt;
  // Identical sets give −1e-13-style rounding; a distance is never negative.
  return Math.max(0, fd);
}

/** Fréchet distance between two feature sets (≥ 2 vectors each, same dimension). */
export function frechetDistance(a: FeatureSet, b: FeatureSet): number {
  if (a.length < 2 || b.length < 2)
    throw new Error("frechet: each set needs at least 2 vectors for a covariance");
  return frechetFromStats(gaussianStats(a), gaussianStats(b));
}
