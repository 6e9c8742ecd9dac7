// src/stats: the fast eigenvalues and Fréchet distance against the metric's Jacobi path and scipy, KID against
// clean-fid's formula (test/fixtures/kid-reference.json, from tools/stats/kid_reference.py), the group-weighted
// estimators against the metrics at all-ones weights, and calibration: on synthetic data with a known truth the
// 95% intervals cover it in 90–98% of 200 repeats; two cells of identical samples differ by exactly 0.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { frechetDistance } from "../src/metrics/frechet.ts";
import { inceptionScore } from "../src/metrics/inception-score.ts";
import { kernelInceptionDistance, mmd2Unbiased, stratifiedKid } from "../src/metrics/kid.ts";
import { matrix, symmetricEigen } from "../src/metrics/linalg.ts";
import type { CellObservations } from "../src/metrics/observations.ts";
import { flatten } from "../src/metrics/observations.ts";
import { precisionRecall } from "../src/metrics/precision-recall.ts";
import { mcnemarExact, wilsonInterval } from "../src/metrics/prompt-accuracy.ts";
import {
  basicInterval,
  bootstrapP,
  bootstrapPlan,
  holm,
  percentileInterval,
  replicate,
  samplesNeeded,
  withinGroupPlan,
  withinReplicate,
} from "../src/stats/bootstrap.ts";
import { pivotedCholesky, symmetricEigenvalues } from "../src/stats/eigen.ts";
import {
  crossTerm,
  factor,
  frechet,
  IsSums,
  kernelGroupSums,
  MeanSeries,
  MomentSums,
  selfKernel,
  uTerm,
} from "../src/stats/estimators.ts";
import { newcombePairedInterval, pairedTable } from "../src/stats/paired-proportion.ts";
import { runStats } from "../src/stats/run-stats.ts";
import { Rng } from "../src/util/rng.ts";

const close = (got: number, want: number, tol: number, what: string) =>
  assert.ok(
    Math.abs(got - want) <= tol * Math.max(1, Math.abs(want)),
    `${what}: got ${got}, want ${want} ± ${tol}`,
  );

function gaussianRows(rng: Rng, n: number, d: number, mean = 0, scale = 1): number[][] {
  return Array.from({ length: n }, () => Array.from({ length: d }, () => mean + scale * rng.normal()));
}

const f32 = (rows: number[][]) => Float32Array.from(rows.flat());

describe("stats: linear algebra", () => {
  it("QL eigenvalues equal Jacobi's on a random symmetric matrix", () => {
    const rng = new Rng(3);
    const n = 17;
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++)
      for (let j = 0; j <= i; j++) {
        const v = rng.normal();
        a[i * n + j] = v;
        a[j * n + i] = v;
      }
    const ql = [...symmetricEigenvalues(a, n)].sort((x, y) => x - y);
    const jac = [...symmetricEigen(matrix(n, a)).values].sort((x, y) => x - y);
    ql.forEach((v, i) => {
      close(v, jac[i]!, 1e-10, `eigenvalue ${i}`);
    });
  });

  it("pivoted Cholesky factors a singular PSD matrix (rank < d)", () => {
    const rng = new Rng(4);
    const d = 6;
    const x = gaussianRows(rng, 3, d); // 3 vectors: rank ≤ 3
    const a = new Float64Array(d * d);
    for (const v of x) for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) a[i * d + j]! += v[i]! * v[j]!;
    const { l, rank } = pivotedCholesky(a, d);
    assert.equal(rank, 3);
    for (let i = 0; i < d; i++)
      for (let j = 0; j < d; j++) {
        let s = 0;
        for (let k = 0; k < rank; k++) s += l[i * rank + k]! * l[j * rank + k]!;
        close(s, a[i * d + j]!, 1e-10, `(L Lᵀ)[${i},${j}]`);
      }
  });

  it("the bootstrap's Fréchet distance equals the metric's and scipy's, also for N < d", () => {
    const fx = JSON.parse(readFileSync(new URL("./fixtures/kid-reference.json", import.meta.url), "utf8"));
    const ones = new Int32Array(1).fill(1);
    const g0 = new Int32Array(fx.x.length);
    const mx = new MomentSums(f32(fx.x), fx.d, g0, 1);
    const my = new MomentSums(f32(fx.y), fx.d, new Int32Array(fx.y.length), 1);
    const fast = frechet(factor(my.gaussian(ones)), mx.gaussian(ones));
    close(fast, fx.fd_xy, 1e-6, "FD vs scipy (float32 features)");
    close(fast, frechetDistance(fx.x, fx.y), 1e-6, "FD vs the metric");
    const rng = new Rng(5);
    const a = gaussianRows(rng, 10, 24, 0.2);
    const b = gaussianRows(rng, 12, 24);
    const ma = new MomentSums(f32(a), 24, new Int32Array(10), 1);
    const mb = new MomentSums(f32(b), 24, new Int32Array(12), 1);
    close(frechet(factor(mb.gaussian(ones)), ma.gaussian(ones)), frechetDistance(a, b), 1e-6, "FD at N < d");
  });
});

describe("stats: KID", () => {
  const fx = JSON.parse(readFileSync(new URL("./fixtures/kid-reference.json", import.meta.url), "utf8"));
  it("matches clean-fid's kernel_distance on one whole-set subset, and the two-sample U-statistic", () => {
    const r = kernelInceptionDistance(fx.x, fx.y);
    close(r.value, fx.kid_xy_clean_fid, 1e-9, "KID vs clean-fid");
    assert.ok(Number.isNaN(r.std), "no subset std when every subset is the whole set");
    const g = 1;
    const w = [1];
    const sx = selfKernel(f32(fx.x), new Int32Array(fx.x.length), fx.d, g);
    const sz = selfKernel(f32(fx.z), new Int32Array(fx.z.length), fx.d, g);
    const cross = kernelGroupSums(
      f32(fx.x),
      new Int32Array(fx.x.length),
      f32(fx.z),
      new Int32Array(fx.z.length),
      fx.d,
      g,
    );
    const u = uTerm(sx, w) + uTerm(sz, w) - 2 * crossTerm(cross, sx.cnt, sz.cnt, w);
    close(u, fx.mmd_u_xz, 1e-5, "weighted U-statistic at unit weights vs numpy (float32 features)");
  });

  it("is unbiased on prompt-stratified sets where the plain estimator is biased low", () => {
    // Two real sets drawn the way a sweep draws them: 4 samples of each of 12 prompts, samples of one prompt alike.
    // Their population MMD² is 0.
    const rng = new Rng(16);
    const ids = Array.from({ length: 48 }, (_, i) => `p${Math.floor(i / 4)}`);
    let plain = 0;
    let strat = 0;
    const repeats = 150;
    for (let r = 0; r < repeats; r++) {
      const centres = Array.from({ length: 12 }, () => gaussianRows(rng, 1, 4, 0, 1.5)[0]!);
      const draw = () => ids.map((_, i) => centres[Math.floor(i / 4)]!.map((c) => c + 0.3 * rng.normal()));
      const a = draw();
      const b = draw();
      plain += mmd2Unbiased(a, b) / repeats;
      strat += stratifiedKid(a, ids, b, ids) / repeats;
    }
    assert.ok(plain < -0.01, `the plain estimator's mean is negative (${plain})`);
    assert.ok(Math.abs(strat) < Math.abs(plain) / 5, `the stratified mean is near 0 (${strat} vs ${plain})`);
  });

  it("subsets give a mean near the whole-set value and a positive std", () => {
    const rng = new Rng(6);
    const x = gaussianRows(rng, 40, 4, 0.5);
    const y = gaussianRows(rng, 40, 4);
    const r = kernelInceptionDistance(x, y, { subsetSize: 20 });
    assert.ok(r.std > 0, "std over distinct subsets");
    assert.ok(Math.abs(r.value - mmd2Unbiased(x, y)) < 3 * r.std, "subset mean near the whole-set estimate");
  });
});

describe("stats: estimators at unit weights are the metrics", () => {
  it("IS, mean and precision/recall", () => {
    const rng = new Rng(7);
    const probs = Array.from({ length: 30 }, () => {
      const v = Array.from({ length: 5 }, () => Math.exp(2 * rng.normal()));
      const s = v.reduce((a, b) => a + b, 0);
      return v.map((x) => x / s);
    });
    const groups = Int32Array.from({ length: 30 }, (_, i) => i % 6);
    const ones = new Array(6).fill(1);
    close(new IsSums(f32(probs), 5, groups, 6).at(ones), inceptionScore(probs).score, 1e-6, "IS");
    const vals = probs.map((p) => p[0]!);
    close(new MeanSeries(vals, groups, 6).at(ones), vals.reduce((a, b) => a + b, 0) / 30, 1e-12, "mean");
  });

  it("runStats reproduces FD, KID, precision, recall and accuracy of a cell", () => {
    const rng = new Rng(8);
    const ids = Array.from({ length: 24 }, (_, i) => `p${i % 6}`);
    const gen = gaussianRows(rng, 24, 8, 0.3);
    const real = gaussianRows(rng, 24, 8);
    const correct = ids.map(() => rng.next() < 0.6);
    const s = runStats({
      cells: [{ id: "a", obs: { promptId: ids, features: flatten(gen), correct } }],
      reference: { promptId: ids, features: flatten(real) },
      b: 50,
    });
    const st = s.cells[0]!.stats;
    close(st.fd!.value, frechetDistance(gen, real), 1e-5, "fd");
    close(st.kid!.value, stratifiedKid(gen, ids, real, ids), 1e-5, "kid (prompt-stratified)");
    const pr = precisionRecall(real, gen, 3);
    close(st.precision!.value, pr.precision, 1e-12, "precision");
    close(st.recall!.value, pr.recall, 1e-12, "recall");
    const c = correct.filter(Boolean).length;
    close(st.accuracy!.value, c / 24, 1e-12, "accuracy");
    assert.deepEqual(
      [st.accuracy!.lo, st.accuracy!.hi],
      wilsonInterval(c, 24),
      "Wilson interval for accuracy",
    );
    for (const key of ["kid", "precision", "recall"]) {
      const m = st[key]!;
      assert.equal(m.method, "percentile");
      assert.ok(
        m.lo <= m.value + 1e-12 && m.value - 1e-12 <= m.hi + 0.05,
        `${key}: ${m.lo} ≤ ${m.value} ≤ ${m.hi}`,
      );
    }
    assert.equal(st.fd!.method, "basic", "FD's small-N bias: the basic interval");
    assert.ok(0 <= st.fd!.lo && st.fd!.lo < st.fd!.hi, "FD's interval is non-negative and has width");
  });
});

describe("stats: the replicate loop on two threads", () => {
  it("gives the same replicates, bit for bit, as one thread (cells, the floor and the reference's FD)", () => {
    const rng = new Rng(9);
    const ids = Array.from({ length: 30 }, (_, i) => `p${i % 5}`);
    const cell = (shift: number): CellObservations => ({
      promptId: ids,
      features: flatten(gaussianRows(rng, 30, 6, shift)),
      correct: ids.map(() => rng.next() < 0.5),
      clipScore: ids.map(() => 25 + rng.normal()),
    });
    const input = {
      cells: [0, 0.2, 0.4].map((shift, i) => ({ id: `c${i}`, obs: cell(shift) })),
      reference: {
        promptId: ids,
        features: flatten(gaussianRows(rng, 30, 6)),
        floor: { promptId: ids, features: flatten(gaussianRows(rng, 30, 6)) },
      },
      b: 60,
    };
    const one = runStats({ ...input, threads: "off" });
    // The worker answered: its replicates were not taken over by this thread (which says so on stderr).
    const write = process.stderr.write;
    const said: string[] = [];
    process.stderr.write = ((chunk: string) => said.push(String(chunk)) > 0) as typeof write;
    let two: ReturnType<typeof runStats>;
    try {
      two = runStats({ ...input, threads: "force" });
    } finally {
      process.stderr.write = write;
    }
    assert.deepEqual(said, []);
    assert.deepEqual(two, one);
    assert.ok(Object.keys(one.cells[0]!.reps).includes("fd"), "FD's replicates are among them");
  });
});

describe("stats: paired proportions", () => {
  it("Newcombe's paired interval matches the published example and is not degenerate without discordant pairs", () => {
    // Cavo et al. 2012 in Fagerland, Lydersen & Laake (2017), ch. 8 (the R package contingencytables prints
    // "estimate = -0.0621 (95% CI -0.1186 to -0.0046)").
    const iv = newcombePairedInterval({ both: 59, onlyA: 6, onlyB: 16, neither: 80 });
    close(iv.lo, -0.1186, 5e-5, "lower");
    close(iv.hi, -0.0046, 5e-5, "upper");
    const same = newcombePairedInterval({ both: 800, onlyA: 0, onlyB: 0, neither: 40 });
    assert.ok(same.lo < -0.004 && same.hi > 0.004, `no discordant pair: [${same.lo}, ${same.hi}]`);
    const all = newcombePairedInterval({ both: 840, onlyA: 0, onlyB: 0, neither: 0 });
    assert.ok(all.lo < 0 && all.hi > 0 && all.hi <= 1, "all right in both: still an interval around 0");
    assert.deepEqual(pairedTable([true, true, false, false], [true, false, true, false]), {
      both: 1,
      onlyA: 1,
      onlyB: 1,
      neither: 1,
    });
    assert.throws(() => pairedTable([true], []), /equal lengths/);
    assert.throws(() => newcombePairedInterval({ both: 0, onlyA: 0, onlyB: 0, neither: 0 }), /empty table/);
  });

  it("agrees with the exact McNemar test except at the boundary, where the exact test is the stricter", () => {
    let disagree = 0;
    let total = 0;
    for (const n of [60, 200, 840])
      for (const both of [Math.floor(n / 2), Math.floor(0.85 * n)])
        for (let b = 0; b <= 40; b++)
          for (let c = 0; c <= 40; c++) {
            const neither = n - both - b - c;
            if (neither < 0) continue;
            total++;
            const iv = newcombePairedInterval({ both, onlyA: b, onlyB: c, neither });
            const excludes = iv.lo > 0 || iv.hi < 0;
            const p = mcnemarExact(b, c);
            if (p < 0.05) assert.ok(excludes, `McNemar p ${p} < 0.05 but [${iv.lo}, ${iv.hi}] (${b}, ${c})`);
            if (excludes) assert.ok(p < 0.1, `interval excludes 0 but McNemar p ${p} (${b}, ${c} of ${n})`);
            if (excludes !== p < 0.05) disagree++;
          }
    assert.ok(disagree / total < 0.05, `${disagree} of ${total} tables disagree`);
  });
});

describe("stats: paired bootstrap", () => {
  it("uses the same draws for every cell; identical cells differ by exactly 0 with p = 1", () => {
    const rng = new Rng(9);
    const ids = Array.from({ length: 30 }, (_, i) => `p${i % 10}`);
    const obs: CellObservations = {
      promptId: ids,
      clipScore: ids.map(() => 20 + rng.normal()),
      features: flatten(gaussianRows(rng, 30, 4, 0.2)),
      correct: ids.map(() => rng.next() < 0.5),
      classProbs: {
        dim: 3,
        data: Float32Array.from(
          ids.flatMap(() => {
            const v = [0, 1, 2].map(() => Math.exp(rng.normal()));
            const t = v[0]! + v[1]! + v[2]!;
            return v.map((x) => x / t);
          }),
        ),
      },
    };
    const s = runStats({
      cells: [
        { id: "a", obs },
        { id: "b", obs },
      ],
      reference: { promptId: ids, features: flatten(gaussianRows(rng, 30, 4)) },
      b: 200,
    });
    const is = s.cells[0]!.stats.is!;
    assert.equal(is.method, "basic", "IS: the within-prompt bootstrap's basic interval");
    assert.ok(Number.isFinite(is.lo) && is.lo < is.hi && is.lo >= 1, `IS: [${is.lo}, ${is.hi}]`);
    // A cell with other samples per prompt has no within-prompt pairing with the plan: no IS interval.
    const short: CellObservations = {
      promptId: ids.slice(1),
      classProbs: { dim: 3, data: obs.classProbs!.data.slice(3) },
    };
    const odd = runStats({
      cells: [
        { id: "a", obs },
        { id: "short", obs: short },
      ],
      b: 50,
    }).cells[1]!.stats.is!;
    assert.ok(
      Number.isFinite(odd.value) && Number.isNaN(odd.lo),
      "IS of a cell off the plan: value, no interval",
    );
    for (const key of ["clip_score", "fd", "kid", "accuracy", "precision", "is"]) {
      const a = s.cells[0]!.reps[key]!;
      const b = s.cells[1]!.reps[key]!;
      const delta = a.map((v, i) => v - b[i]!);
      const iv = percentileInterval(delta);
      assert.deepEqual([iv.lo, iv.hi], [0, 0], `${key}: the Δ interval is degenerate at 0`);
      assert.equal(bootstrapP(delta), 1, `${key}: p = 1`);
      assert.ok(
        percentileInterval(a).hi > percentileInterval(a).lo,
        `${key}: the cell's own interval has width`,
      );
    }
  });

  it("draws are a function of (groups, B, seed)", () => {
    const a = bootstrapPlan(7, 20, 3);
    assert.deepEqual(a.counts, bootstrapPlan(7, 20, 3).counts);
    assert.notDeepEqual(a.counts, bootstrapPlan(7, 20, 4).counts);
    for (let r = 0; r < 20; r++)
      assert.equal(
        replicate(a, r).reduce((x, y) => x + y, 0),
        7,
        "G draws per replicate",
      );
  });

  it("Holm's adjustment and the sample-size formula", () => {
    assert.deepEqual(holm([0.01, 0.04, 0.03, Number.NaN]), [0.03, 0.06, 0.06, Number.NaN]);
    // sd 0.01 at n = 100 resolves Δ = 0.028 at n ≈ 100 (z sum 2.80).
    assert.equal(samplesNeeded(0.01, 100, 0.028), 101);
    assert.equal(samplesNeeded(0.01, 100, 0.014), 401);
    assert.equal(samplesNeeded(0.02, 100, 0.028), 401, "twice the sd, four times the samples");
  });
});

/**
 * E (xᵀy/d + 1)³ for independent x ~ N(m1·1, s1² I) and y ~ N(m2·1, s2² I) in d dimensions: u = xᵀy is a sum of d
 * independent products z = x_k y_k, so its cumulants are d times z's, and E u, E u², E u³ follow from them.
 */
function kernelTruth(m1: number, s1: number, m2: number, s2: number, d = 2): number {
  const ez = m1 * m2;
  const ez2 = (m1 * m1 + s1 * s1) * (m2 * m2 + s2 * s2);
  const ez3 = (m1 ** 3 + 3 * m1 * s1 * s1) * (m2 ** 3 + 3 * m2 * s2 * s2);
  const k1 = d * ez;
  const k2 = d * (ez2 - ez * ez);
  const k3 = d * (ez3 - 3 * ez * ez2 + 2 * ez ** 3);
  const eu = k1;
  const eu2 = k2 + k1 * k1;
  const eu3 = k3 + 3 * k2 * k1 + k1 ** 3;
  return eu3 / d ** 3 + (3 * eu2) / d ** 2 + (3 * eu) / d + 1;
}

describe("stats: calibration on synthetic data with a known truth (200 repeats)", () => {
  const REPEATS = 200;
  const B = 400;
  const coverage = (hits: number) => hits / REPEATS;
  const inBand = (c: number, what: string, t: { diagnostic(s: string): void }) => {
    const msg = `${what}: 95% intervals covered the truth in ${(100 * c).toFixed(1)}% of ${REPEATS}`;
    t.diagnostic(msg);
    assert.ok(c >= 0.9 && c <= 0.98, msg);
  };

  it("a prompt-clustered mean (group effects + noise)", (t) => {
    const rng = new Rng(10);
    const G = 30;
    const per = 4;
    const groups = Int32Array.from({ length: G * per }, (_, i) => Math.floor(i / per));
    const plan = bootstrapPlan(G, B, 1);
    let hits = 0;
    for (let t = 0; t < REPEATS; t++) {
      const effect = Array.from({ length: G }, () => rng.normal());
      const v = Array.from(groups, (g) => 5 + effect[g]! + rng.normal());
      const s = new MeanSeries(v, groups, G);
      const reps = Float64Array.from({ length: B }, (_, r) => s.at(replicate(plan, r)));
      const iv = percentileInterval(reps);
      if (iv.lo <= 5 && 5 <= iv.hi) hits++;
    }
    inBand(coverage(hits), "mean", t);
  });

  it("the Inception score: within-prompt bootstrap, basic interval (prompts fixed, 4 and 40 samples each)", (t) => {
    // 21 prompts, each a distribution of class-probability vectors (softmax of its own logits plus noise). The truth
    // is the IS of those distributions in equal proportion, from 2,000 samples a prompt; the interval is
    // conditional on the prompts, which is what it claims.
    const rng = new Rng(5);
    const G = 21;
    const C = 24;
    const mu = Array.from({ length: G }, () => Array.from({ length: C }, () => 2 * rng.normal()));
    const draw = (k: number) => {
      const v = mu[k]!.map((m) => Math.exp(m + 1.5 * rng.normal()));
      const s = v.reduce((a, b) => a + b, 0);
      return v.map((x) => x / s);
    };
    const groupsOf = (per: number) => Int32Array.from({ length: G * per }, (_, i) => Math.floor(i / per));
    const bigGroups = groupsOf(2000);
    const truth = new IsSums(f32(Array.from(bigGroups, (k) => draw(k))), C, bigGroups, G).at(
      new Array(G).fill(1),
    );
    for (const per of [4, 40]) {
      const groups = groupsOf(per);
      const plan = withinGroupPlan(new Array(G).fill(per), B, 1);
      const slotOf = Int32Array.from(groups, (_, i) => i);
      let hits = 0;
      for (let r = 0; r < REPEATS; r++) {
        const s = new IsSums(f32(Array.from(groups, (k) => draw(k))), C, groups, G);
        const reps = Float64Array.from({ length: B }, (_, i) =>
          s.atSamples(withinReplicate(plan, i), slotOf),
        );
        const iv = basicInterval(reps, s.at(new Array(G).fill(1)));
        if (iv.lo <= truth && truth <= iv.hi) hits++;
      }
      inBand(coverage(hits), `IS, ${per} samples a prompt`, t);
    }
  });

  it("Bernoulli accuracies (Wilson)", (t) => {
    const rng = new Rng(11);
    let hits = 0;
    for (let t = 0; t < REPEATS; t++) {
      let c = 0;
      for (let i = 0; i < 60; i++) if (rng.next() < 0.8) c++;
      const [lo, hi] = wilsonInterval(c, 60);
      if (lo <= 0.8 && 0.8 <= hi) hits++;
    }
    inBand(coverage(hits), "accuracy", t);
  });

  /** Paired verdicts of two cells on the same n samples with cell probabilities P(both), P(only A), P(only B). */
  const pairedVerdicts = (rng: Rng, n: number, pBoth: number, pA: number, pB: number) => {
    const a: boolean[] = [];
    const b: boolean[] = [];
    for (let i = 0; i < n; i++) {
      const u = rng.next();
      a.push(u < pBoth + pA);
      b.push(u < pBoth || (u >= pBoth + pA && u < pBoth + pA + pB));
    }
    return pairedTable(a, b);
  };

  it("paired accuracy difference (Newcombe)", (t) => {
    const rng = new Rng(16);
    let hits = 0;
    for (let r = 0; r < REPEATS; r++) {
      const iv = newcombePairedInterval(pairedVerdicts(rng, 60, 0.7, 0.1, 0.04));
      if (iv.lo <= 0.06 && 0.06 <= iv.hi) hits++;
    }
    inBand(coverage(hits), "paired accuracy difference (Newcombe)", t);
  });

  it("paired accuracy difference with rare discordance: never degenerate, conservative", (t) => {
    // Δ = 0 with ~1 discordant pair in 300: most tables have none, where the bootstrap's interval is [0, 0].
    // Newcombe (1998) reports method 10 conservative in this corner; coverage above 98% is expected here.
    const rng = new Rng(17);
    let hits = 0;
    for (let r = 0; r < REPEATS; r++) {
      const iv = newcombePairedInterval(pairedVerdicts(rng, 300, 0.95, 0.002, 0.002));
      assert.ok(iv.hi - iv.lo > 0.005, `an interval with width: [${iv.lo}, ${iv.hi}]`);
      if (iv.lo <= 0 && 0 <= iv.hi) hits++;
    }
    t.diagnostic(`rare discordance: covered 0 in ${(100 * coverage(hits)).toFixed(1)}% of ${REPEATS}`);
    assert.ok(coverage(hits) >= 0.9, `coverage ${coverage(hits)}`);
  });

  // Two Gaussians in d = 2: N(δ·1, I) against N(0, s² I). FD's truth is δ² · d + d (1 − s)²; KID's is exact too
  // (kernelTruth below).
  const d = 2;
  const delta = 0.6;
  const s = 1.3;
  // 80 prompt groups: at 40 the percentile interval of KID covers ~92% (800 repeats), at 80 ~95% (the bootstrap's
  // small-group undercoverage; read intervals of runs with few prompts as somewhat narrow).
  const G = 80;
  const per = 5;
  const n = G * per;
  const groups = Int32Array.from({ length: n }, (_, i) => Math.floor(i / per));
  const draw = (rng: Rng, mean: number, scale: number) => f32(gaussianRows(rng, n, d, mean, scale));

  it("Fréchet distance of known Gaussians", (t) => {
    const truth = delta * delta * d + d * (1 - s) ** 2;
    const rng = new Rng(12);
    const plan = bootstrapPlan(G, B, 2);
    let hits = 0;
    for (let t = 0; t < REPEATS; t++) {
      const gen = new MomentSums(draw(rng, delta, 1), d, groups, G);
      const real = new MomentSums(draw(rng, 0, s), d, groups, G);
      const fd = (w: ArrayLike<number>) => frechet(factor(real.gaussian(w)), gen.gaussian(w));
      const reps = Float64Array.from({ length: B }, (_, r) => fd(replicate(plan, r)));
      const iv = basicInterval(reps, fd(new Array(G).fill(1)));
      if (iv.lo <= truth && truth <= iv.hi) hits++;
    }
    inBand(coverage(hits), "FD", t);
  });

  it("the exact kernel expectation agrees with a large-sample U-statistic", () => {
    const big = new Rng(13);
    const bx = gaussianRows(big, 1500, d, delta, 1);
    const by = gaussianRows(big, 1500, d, 0, s);
    const truth = kernelTruth(delta, 1, delta, 1) + kernelTruth(0, s, 0, s) - 2 * kernelTruth(delta, 1, 0, s);
    assert.ok(Math.abs(mmd2Unbiased(bx, by) - truth) < 0.1 * truth, `${mmd2Unbiased(bx, by)} vs ${truth}`);
  });

  it("FD at small N (8-d, 80 samples): the basic interval covers, the percentile interval does not", (t) => {
    const dd = 8;
    const gg = 20;
    const pp = 4;
    const nn = gg * pp;
    const gs = Int32Array.from({ length: nn }, (_, i) => Math.floor(i / pp));
    const truth = delta * delta * dd + dd * (1 - s) ** 2;
    const rng = new Rng(15);
    const plan = bootstrapPlan(gg, B, 4);
    const ones = new Array(gg).fill(1);
    let basic = 0;
    let percentile = 0;
    for (let r = 0; r < REPEATS; r++) {
      const gen = new MomentSums(f32(gaussianRows(rng, nn, dd, delta, 1)), dd, gs, gg);
      const real = new MomentSums(f32(gaussianRows(rng, nn, dd, 0, s)), dd, gs, gg);
      const fd = (w: ArrayLike<number>) => frechet(factor(real.gaussian(w)), gen.gaussian(w));
      const reps = Float64Array.from({ length: B }, (_, k) => fd(replicate(plan, k)));
      const b = basicInterval(reps, fd(ones));
      const p = percentileInterval(reps);
      if (b.lo <= truth && truth <= b.hi) basic++;
      if (p.lo <= truth && truth <= p.hi) percentile++;
    }
    t.diagnostic(`small-N FD: percentile interval covered ${(100 * coverage(percentile)).toFixed(1)}%`);
    inBand(coverage(basic), "FD, basic interval, N = 80 in 8-d", t);
    assert.ok(coverage(percentile) < 0.8, "the percentile interval of a biased statistic misses its truth");
  });

  it("KID of known Gaussians", (t) => {
    const truth = kernelTruth(delta, 1, delta, 1) + kernelTruth(0, s, 0, s) - 2 * kernelTruth(delta, 1, 0, s);
    const rng = new Rng(14);
    const plan = bootstrapPlan(G, B, 3);
    let hits = 0;
    for (let t = 0; t < REPEATS; t++) {
      const x = draw(rng, delta, 1);
      const y = draw(rng, 0, s);
      const sx = selfKernel(x, groups, d, G);
      const sy = selfKernel(y, groups, d, G);
      const cross = kernelGroupSums(x, groups, y, groups, d, G);
      const reps = Float64Array.from({ length: B }, (_, r) => {
        const w = replicate(plan, r);
        return uTerm(sx, w) + uTerm(sy, w) - 2 * crossTerm(cross, sx.cnt, sy.cnt, w);
      });
      const iv = percentileInterval(reps);
      if (iv.lo <= truth && truth <= iv.hi) hits++;
    }
    inBand(coverage(hits), "KID", t);
  });
});
