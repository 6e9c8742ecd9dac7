// Fast symmetric eigenvalues for the bootstrap's Fréchet distances. The metric itself uses cyclic Jacobi
// (src/metrics/linalg.ts: accurate, but tens of milliseconds at d = 64); a bootstrap needs a thousand FDs per
// cell, so here the trace term tr (Σ1 Σ2)^{1/2} is taken as Σ √λ(Lᵀ Σ2 L) with Σ1 = L Lᵀ from a pivoted Cholesky
// (which also serves the singular covariances of N < d cells), and the eigenvalues come from a Householder
// tridiagonalisation and the implicit QL iteration without eigenvectors (Golub & Van Loan §8.3).

/**
 * Pivoted Cholesky of a symmetric PSD matrix `a` (d × d, row-major): returns L (d × r, row-major) with
 * a ≈ L Lᵀ, stopping when the largest remaining pivot falls below `tol` · max diagonal (rank r ≤ d).
 */
export function pivotedCholesky(a: Float64Array, d: number, tol = 1e-12): { l: Float64Array; rank: number } {
  const diag = new Float64Array(d);
  let maxDiag = 0;
  for (let i = 0; i < d; i++) {
    diag[i] = a[i * d + i]!;
    maxDiag = Math.max(maxDiag, diag[i]!);
  }
  const cols: Float64Array[] = [];
  const used = new Uint8Array(d);
  const limit = tol * maxDiag;
  for (let k = 0; k < d; k++) {
    let p = -1;
    let best = limit;
    for (let i = 0; i < d; i++) {
      if (!used[i] && diag[i]! > best) {
        best = diag[i]!;
        p = i;
      }
    }
    if (p < 0) break;
    used[p] = 1;
    const piv = Math.sqrt(diag[p]!);
    const col = new Float64Array(d);
    for (let i = 0; i < d; i++) {
      if (used[i] && i !== p) continue;
      let s = a[i * d + p]!;
      for (const c of cols) s -= c[i]! * c[p]!;
      col[i] = s / piv;
    }
    col[p] = piv;
    for (let i = 0; i < d; i++) if (!used[i]) diag[i]! -= col[i]! * col[i]!;
    cols.push(col);
  }
  const r = cols.length;
  const l = new Float64Array(d * r);
  cols.forEach((c, k) => {
    for (let i = 0; i < d; i++) l[i * r + k] = c[i]!;
  });
  return { l, rank: r };
}

/** Lᵀ S L for S (d × d) and L (d × r), both row-major; the result is r × r. */
export function congruence(s: Float64Array, l: Float64Array, d: number, r: number): Float64Array {
  const sl = new Float64Array(d * r);
  for (let i = 0; i < d; i++) {
    for (let k = 0; k < d; k++) {
      const sik = s[i * d + k]!;
      if (sik === 0) continue;
      for (let j = 0; j < r; j++) sl[i * r + j]! += sik * l[k * r + j]!;
    }
  }
  const out = new Float64Array(r * r);
  for (let k = 0; k < d; k++) {
    for (let i = 0; i < r; i++) {
      const lki = l[k * r + i]!;
      if (lki === 0) continue;
      for (let j = i; j < r; j++) out[i * r + j]! += lki * sl[k * r + j]!;
    }
  }
  for (let i = 0; i < r; i++) for (let j = 0; j < i; j++) out[i * r + j] = out[j * r + i]!;
  return out;
}

/**
 * Eigenvalues of a symmetric n × n matrix (row-major; only the lower triangle is read), by Householder reduction to
 * tridiagonal form and the implicit QL iteration with Wilkinson shifts (the classic tred2/tqli pair without
 * vectors). Unsorted.
 */
export function symmetricEigenvalues(m: Float64Array, n: number): Float64Array {
  const a = Float64Array.from(m);
  const d = new Float64Array(n);
  const e = new Float64Array(n);
  for (let i = n - 1; i > 0; i--) {
    const l = i - 1;
    let h = 0;
    if (l > 0) {
      let scale = 0;
      for (let k = 0; k <= l; k++) scale += Math.abs(a[i * n + k]!);
      if (scale === 0) e[i] = a[i * n + l]!;
      else {
        for (let k = 0; k <= l; k++) {
          a[i * n + k]! /= scale;
          h += a[i * n + k]! ** 2;
        }
        const f = a[i * n + l]!;
        const g = f >= 0 ? -Math.sqrt(h) : Math.sqrt(h);
        e[i] = scale * g;
        h -= f * g;
        a[i * n + l] = f - g;
        let ff = 0;
        for (let j = 0; j <= l; j++) {
          let gg = 0;
          for (let k = 0; k <= j; k++) gg += a[j * n + k]! * a[i * n + k]!;
          for (let k = j + 1; k <= l; k++) gg += a[k * n + j]! * a[i * n + k]!;
          e[j] = gg / h;
          ff += e[j]! * a[i * n + j]!;
        }
        const hh = ff / (h + h);
        for (let j = 0; j <= l; j++) {
          const fj = a[i * n + j]!;
          const gj = e[j]! - hh * fj;
          e[j] = gj;
          for (let k = 0; k <= j; k++) a[j * n + k]! -= fj * e[k]! + gj * a[i * n + k]!;
        }
      }
    } else e[i] = a[i * n + l]!;
    d[i] = h;
  }
  for (let i = 0; i < n; i++) d[i] = a[i * n + i]!;
  // QL with implicit shifts on the tridiagonal (d, e).
  for (let i = 1; i < n; i++) e[i - 1] = e[i]!;
  if (n > 0) e[n - 1] = 0;
  for (let l = 0; l < n; l++) {
    let iter = 0;
    for (;;) {
      let mm = l;
      for (; mm < n - 1; mm++) {
        const dd = Math.abs(d[mm]!) + Math.abs(d[mm + 1]!);
        if (Math.abs(e[mm]!) <= Number.EPSILON * dd) break;
      }
      if (mm === l) break;
      if (++iter > 60) throw new Error("symmetricEigenvalues: QL did not converge");
      let g = (d[l + 1]! - d[l]!) / (2 * e[l]!);
      let r = Math.hypot(g, 1);
      g = d[mm]! - d[l]! + e[l]! / (g + (g >= 0 ? Math.abs(r) : -Math.abs(r)));
      let s = 1;
      let c = 1;
      let p = 0;
      let i = mm - 1;
      let underflow = false;
      for (; i >= l; i--) {
        const f = s * e[i]!;
        const b = c * e[i]!;
        r = Math.hypot(f, g);
        e[i + 1] = r;
        if (r === 0) {
          d[i + 1]! -= p;
          e[mm] = 0;
          underflow = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1]! - p;
        r = (d[i]! - g) * s + 2 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
      }
      if (underflow) continue;
      d[l]! -= p;
      e[l] = g;
      e[mm] = 0;
    }
  }
  return d;
}
