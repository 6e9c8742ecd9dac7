"""KID reference numbers for test/stats.test.ts (fixture test/fixtures/kid-reference.json).

Computes the unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 exactly as clean-fid's
`kernel_distance` and torchmetrics' `poly_mmd` do for one subset holding the whole of both sets (n = m), and the
two-sample U-statistic for sets of different sizes, on small seeded Gaussian features. Also FD by scipy's sqrtm as
in clean-fid's `frechet_distance`, for the bootstrap's fast FD. Run: python3 tools/stats/kid_reference.py
"""

import json
import sys

import numpy as np
from scipy import linalg


def kid_clean_fid(x, y):
    # clean-fid: features/kernel_distance, num_subsets = 1, subset = everything.
    n, d = x.shape
    m = n
    a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
    b = (x @ y.T / d + 1) ** 3
    t = (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / m)


def mmd_u(x, y):
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * kxy.sum() / (m * n)
    )


def fd(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(s1.dot(s2))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def main():
    rng = np.random.default_rng(15)
    d = 5
    x = rng.normal(0.3, 1.0, size=(14, d))
    y = rng.normal(0.0, 1.2, size=(14, d))
    z = rng.normal(0.0, 1.0, size=(9, d))
    out = {
        "d": d,
        "x": x.round(6).tolist(),
        "y": y.round(6).tolist(),
        "z": z.round(6).tolist(),
    }
    # Recompute on the rounded values the fixture stores.
    x, y, z = (np.array(out[k]) for k in ("x", "y", "z"))
    out["kid_xy_clean_fid"] = kid_clean_fid(x, y)
    out["mmd_u_xz"] = mmd_u(x, z)
    out["fd_xy"] = fd(x, y)
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
