// Gradient registration (tfjs-core ships none by default) comes with the project's differentiable ops.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  createDiffusion,
  discretizedGaussianLogLikelihood,
  getNamedBetaSchedule,
  normalKl,
  spaceTimesteps,
} from "../src/core/diffusion.ts";
import {
  backendFromEnv,
  initEngine,
  type Tensor,
  type Tensor1D,
  type Tensor4D,
  tf,
} from "../src/core/engine.ts";
import { npyToNumbers, readNpy } from "../src/core/npy.ts";
import { seededNoise } from "../src/core/samplers.ts";

const GOLDEN =
  process.env.GUIDANCE_LAB_GOLDEN ?? resolve(dirname(fileURLToPath(import.meta.url)), "../../shared/golden");
const noGolden = existsSync(join(GOLDEN, "manifest.json"))
  ? false
  : `golden reference not found at ${GOLDEN} (set GUIDANCE_LAB_GOLDEN)`;

// A message avoids node:assert's source-reading message generation, which is pathologically slow under tsx.
const ok = (cond: boolean, msg = "check failed") => assert.ok(cond, msg);

before(async () => {
  await initEngine(backendFromEnv(), { quiet: true });
});

const maxRel = (ref: ArrayLike<number>, got: ArrayLike<number>) => {
  assert.equal(got.length, ref.length);
  let m = 0;
  let r = 0;
  for (let i = 0; i < ref.length; i++) {
    m = Math.max(m, Math.abs(ref[i]! - got[i]!));
    r = Math.max(r, Math.abs(ref[i]!));
  }
  return m / (r || 1);
};

/** A batch of two 4×4 images with noise, an ε prediction and variance values, for the hybrid-loss tests. */
function hybridInputs() {
  const shape: [number, number, number, number] = [2, 4, 4, 3];
  return {
    x0: tf.randomUniform(shape, -1, 1, "float32", 7) as Tensor4D,
    noise: seededNoise(3)(0, [...shape]),
    out: tf.randomNormal(shape, 0, 1, "float32", 8) as Tensor4D,
    varValues: tf.randomUniform(shape, -1, 1, "float32", 9) as Tensor4D,
  };
}

describe("schedules", () => {
  test("linear is guided-diffusion's scaled linear", () => {
    const b = getNamedBetaSchedule("linear", 1000);
    assert.equal(b[0], 1e-4);
    assert.equal(b[999], 0.02);
    const b100 = getNamedBetaSchedule("linear", 100);
    ok(Math.abs(b100[0]! - 1e-3) < 1e-15 && Math.abs(b100[99]! - 0.2) < 1e-15);
  });

  test("cosine is capped at 0.999 and increasing", () => {
    const b = getNamedBetaSchedule("squaredcos_cap_v2", 1000);
    assert.equal(b[999], 0.999);
    for (let i = 1; i < 1000; i++) ok(b[i]! >= b[i - 1]!);
    assert.deepEqual(getNamedBetaSchedule("cosine", 50), getNamedBetaSchedule("squaredcos_cap_v2", 50));
  });

  test("unknown schedule and bad respacing throw clear errors", () => {
    assert.throws(() => getNamedBetaSchedule("sigmoid", 10), /unknown beta schedule 'sigmoid'/);
    assert.throws(() => spaceTimesteps(1000, "ddim999"), /no integer stride/);
    assert.throws(() => spaceTimesteps(10, "20"), /cannot take 20 steps/);
  });

  test("respacing forms", () => {
    assert.deepEqual(spaceTimesteps(10, ""), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(spaceTimesteps(1000, "ddim10"), [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]);
    const fast = spaceTimesteps(1000, "fast27");
    assert.equal(fast.length, 27);
    assert.equal(fast.at(-1), 997);
  });

  test("respaced ᾱ equals the base ᾱ at the kept steps", () => {
    const base = createDiffusion({ schedule: "linear", steps: 1000 });
    const d = createDiffusion({ schedule: "linear", steps: 1000, respacing: "25" });
    d.timestepMap.forEach((t, i) => {
      ok(Math.abs(d.alphasCumprod[i]! - base.alphasCumprod[t]!) < 1e-12);
    });
  });

  test("every respacing set of the golden manifest", { skip: noGolden }, () => {
    const m = JSON.parse(readFileSync(join(GOLDEN, "manifest.json"), "utf8"));
    const sets = m.meta.space_timesteps_1000 as Record<string, number[]>;
    ok(Object.keys(sets).length > 0);
    for (const [spec, expected] of Object.entries(sets))
      assert.deepEqual(spaceTimesteps(1000, spec), expected, spec);
  });

  test("golden betas and respaced20_cos tables", { skip: noGolden }, () => {
    const load = (p: string) => npyToNumbers(readNpy(join(GOLDEN, "schedules", p)));
    ok(maxRel(load("betas_linear_1000.npy"), getNamedBetaSchedule("linear", 1000)) < 1e-12);
    ok(
      maxRel(load("betas_squaredcos_cap_v2_1000.npy"), getNamedBetaSchedule("squaredcos_cap_v2", 1000)) <
        1e-12,
    );
    const d = createDiffusion({ schedule: "squaredcos_cap_v2", steps: 1000, respacing: "20" });
    assert.deepEqual(load("respaced20_cos/timestep_map.npy"), d.timestepMap);
    const tables = {
      betas: d.betas,
      alphas_cumprod: d.alphasCumprod,
      alphas_cumprod_prev: d.alphasCumprodPrev,
      sqrt_recip_alphas_cumprod: d.sqrtRecipAlphasCumprod,
      sqrt_recipm1_alphas_cumprod: d.sqrtRecipm1AlphasCumprod,
      posterior_variance: d.posteriorVariance,
      posterior_log_variance_clipped: d.posteriorLogVarianceClipped,
      posterior_mean_coef1: d.posteriorMeanCoef1,
      posterior_mean_coef2: d.posteriorMeanCoef2,
    };
    for (const [name, table] of Object.entries(tables)) {
      ok(maxRel(load(`respaced20_cos/${name}.npy`), table) < 1e-12, name);
    }
  });
});

describe("forward process and posterior", () => {
  const d = createDiffusion({
    schedule: "linear",
    steps: 1000,
    respacing: "50",
    modelVarType: "learned_range",
  });
  const shape: [number, number, number, number] = [2, 16, 16, 3];

  test("qSample has mean sqrt(ᾱ)·x0 and std sqrt(1−ᾱ)", () => {
    const i = 20;
    const [mean, std] = tf.tidy(() => {
      const x0 = tf.fill(shape, 0.5) as Tensor4D;
      const xt = d.qSample(x0, i, seededNoise(1)(0, [...shape]));
      const m = tf.moments(xt);
      return [m.mean.dataSync()[0]!, Math.sqrt(m.variance.dataSync()[0]!)];
    });
    const n = shape.reduce((a, b) => a * b, 1);
    ok(Math.abs(mean - 0.5 * d.sqrtAlphasCumprod[i]!) < (4 * d.sqrtOneMinusAlphasCumprod[i]!) / Math.sqrt(n));
    ok(Math.abs(std / d.sqrtOneMinusAlphasCumprod[i]! - 1) < 0.05);
  });

  test("qSample with per-example indices and the eps round trip", () => {
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      const x0 = tf.randomUniform(shape, -1, 1, "float32", 3) as Tensor4D;
      const eps = seededNoise(2)(0, [...shape]);
      const t = [5, 40];
      const xt = d.qSample(x0, t, eps);
      const back = d.predictXstartFromEps(xt, t, eps);
      ok(tf.max(tf.abs(tf.sub(back, x0))).dataSync()[0]! < 1e-4);
      const epsBack = d.predictEpsFromXstart(xt, t, x0);
      ok(tf.max(tf.abs(tf.sub(epsBack, eps))).dataSync()[0]! < 1e-3);
      const v = d.vTarget(x0, t, eps);
      ok(tf.max(tf.abs(tf.sub(d.predictXstartFromV(xt, t, v), x0))).dataSync()[0]! < 1e-5);
    });
    assert.equal(tf.memory().numTensors, before);
  });

  test("posterior mean/variance against a direct float64 computation", () => {
    const base = getNamedBetaSchedule("linear", 1000);
    const use = d.timestepMap;
    // ᾱ from the base schedule at the kept steps; β' = 1 − ᾱ_t/ᾱ_prev (Ho et al. eq. 6–7).
    const abarAt = (t: number) => base.slice(0, t + 1).reduce((a, b) => a * (1 - b), 1);
    for (const i of [0, 1, 17, 49]) {
      const abar = abarAt(use[i]!);
      const abarPrev = i === 0 ? 1 : abarAt(use[i - 1]!);
      const beta = 1 - abar / abarPrev;
      const c1 = (Math.sqrt(abarPrev) * beta) / (1 - abar);
      const c2 = (Math.sqrt(1 - beta) * (1 - abarPrev)) / (1 - abar);
      const v = (beta * (1 - abarPrev)) / (1 - abar);
      const [m, vv] = tf.tidy(() => {
        const x0 = tf.fill([1, 1, 1, 1], 0.25) as Tensor4D;
        const xt = tf.fill([1, 1, 1, 1], -0.75) as Tensor4D;
        const post = d.qPosteriorMeanVariance(x0, xt, i);
        return [post.mean.dataSync()[0]!, post.variance.dataSync()[0]!];
      });
      ok(Math.abs(m - (c1 * 0.25 - c2 * 0.75)) < 1e-6, `mean at ${i}`);
      ok(Math.abs(vv - v) <= 1e-7 * Math.max(1, v), `variance at ${i}`);
    }
  });

  test("learned-range variance interpolates log β and the clipped posterior log variance", () => {
    const i = 30;
    const [hi, lo] = tf.tidy(() => {
      const x = tf.zeros(shape) as Tensor4D;
      const out = tf.zeros(shape) as Tensor4D;
      const at = (v: number) =>
        d
          .pMeanVariance({ out, kind: "eps", varValues: tf.fill(shape, v) as Tensor4D }, x, i)
          .logVariance.dataSync()[0]!;
      return [at(1), at(-1)];
    });
    ok(Math.abs(hi - Math.log(d.betas[i]!)) < 1e-5);
    ok(Math.abs(lo - d.posteriorLogVarianceClipped[i]!) < 1e-5);
  });

  test("denoisedFn runs before clipping; x0 and v predictions", () => {
    tf.tidy(() => {
      const x = tf.fill(shape, 0.3) as Tensor4D;
      const out = tf.fill(shape, 5) as Tensor4D;
      const fixed = createDiffusion({ schedule: "linear", steps: 100 });
      const r = fixed.pMeanVariance({ out, kind: "x0" }, x, 10, {
        clipDenoised: true,
        denoisedFn: (x0) => tf.mul(x0, 0.1) as Tensor4D,
      });
      ok(Math.abs(r.predXstart.dataSync()[0]! - 0.5) < 1e-6);
      const clipped = fixed.pMeanVariance({ out, kind: "x0" }, x, 10, { clipDenoised: true });
      assert.equal(clipped.predXstart.dataSync()[0], 1);
      const v = fixed.pMeanVariance({ out: tf.zerosLike(x), kind: "v" }, x, 10);
      ok(Math.abs(v.predXstart.dataSync()[0]! - 0.3 * fixed.sqrtAlphasCumprod[10]!) < 1e-6);
    });
  });

  test("conditionMean adds Σ·grad; conditionScore shifts eps by −sqrt(1−ᾱ)·grad", () => {
    tf.tidy(() => {
      const fixed = createDiffusion({ schedule: "linear", steps: 100 });
      const x = tf.fill(shape, 0.2) as Tensor4D;
      const pmv = fixed.pMeanVariance({ out: tf.fill(shape, 0.1) as Tensor4D, kind: "eps" }, x, 40);
      const step = fixed.stepInfo(40);
      const grad = () => tf.fill(shape, 2) as Tensor4D;
      const cm = fixed.conditionMean(pmv, x, step, grad);
      const want = pmv.mean.dataSync()[0]! + pmv.variance.dataSync()[0]! * 2;
      ok(Math.abs(cm.mean.dataSync()[0]! - want) < 1e-6);
      const cs = fixed.conditionScore(pmv, x, step, grad);
      const wantEps = pmv.eps.dataSync()[0]! - Math.sqrt(1 - fixed.alphasCumprod[40]!) * 2;
      ok(Math.abs(cs.eps.dataSync()[0]! - wantEps) < 1e-5);
    });
  });
});

describe("training losses", () => {
  test("normalKl is zero for equal Gaussians and the decoder likelihood is a log-probability", () => {
    tf.tidy(() => {
      const m = tf.fill([2, 2], 0.3);
      const lv = tf.fill([2, 2], -1);
      ok(Math.abs(tf.max(tf.abs(normalKl(m, lv, m, lv))).dataSync()[0]!) < 1e-7);
      const kl = normalKl(tf.scalar(0), tf.scalar(0), tf.scalar(1), tf.scalar(0)).dataSync()[0]!;
      ok(Math.abs(kl - 0.5) < 1e-6);
      const ll = discretizedGaussianLogLikelihood(
        tf.tensor1d([-1, 0, 1]),
        tf.tensor1d([-1, 0, 1]),
        tf.fill([3], -3),
      );
      for (const v of ll.dataSync()) ok(v <= 0 && v > -10, `log-likelihood ${v}`);
    });
  });

  test("hybrid loss: vb trains only the variance (mean gradient stopped)", () => {
    const d = createDiffusion({ schedule: "cosine", steps: 100, modelVarType: "learned_range" });
    tf.tidy(() => {
      const { x0, noise, out, varValues } = hybridInputs();
      const t = [0, 57];
      const losses = d.trainingLosses({ out, kind: "eps", varValues }, x0, t, noise);
      assert.deepEqual(losses.loss.shape, [2]);
      ok(losses.vb.dataSync().every((v) => Number.isFinite(v) && v > 0));
      const gVb = tf.grad((o: Tensor) =>
        tf.sum(d.trainingLosses({ out: o as Tensor4D, kind: "eps", varValues }, x0, t, noise).vb),
      )(out);
      assert.equal(tf.max(tf.abs(gVb)).dataSync()[0], 0);
      const gVar = tf.grad((v: Tensor) =>
        tf.sum(d.trainingLosses({ out, kind: "eps", varValues: v as Tensor4D }, x0, t, noise).vb),
      )(varValues);
      ok(tf.max(tf.abs(gVar)).dataSync()[0]! > 0);
      const gMse = tf.grad((o: Tensor) =>
        tf.sum(d.trainingLosses({ out: o as Tensor4D, kind: "eps", varValues }, x0, t, noise).mse),
      )(out);
      ok(tf.max(tf.abs(gMse)).dataSync()[0]! > 0);
    });
  });

  test("min-SNR-γ weighting: the x0-space weight min(SNR, γ) per prediction kind, applied to L_simple only", () => {
    const d = createDiffusion({ schedule: "cosine", steps: 100, modelVarType: "learned_range" });
    const gamma = 5;
    const eps = d.minSnrWeights("eps", gamma);
    const x0w = d.minSnrWeights("x0", gamma);
    const v = d.minSnrWeights("v", gamma);
    for (let i = 0; i < 100; i++) {
      const snr = d.alphasCumprod[i]! / (1 - d.alphasCumprod[i]!);
      // An ε error e is an x0 error e/√SNR and a v error e an x0 error e/√(SNR + 1): each is min(SNR, γ) in x0.
      ok(Math.abs(eps[i]! * snr - Math.min(snr, gamma)) < 1e-9 * Math.max(1, snr), `eps weight at ${i}`);
      ok(Math.abs(x0w[i]! - Math.min(snr, gamma)) < 1e-12, `x0 weight at ${i}`);
      ok(Math.abs(v[i]! * (snr + 1) - Math.min(snr, gamma)) < 1e-9 * Math.max(1, snr), `v weight at ${i}`);
      if (snr <= gamma) ok(eps[i] === 1, "noisy steps keep weight 1 for ε");
    }
    ok(eps[0]! < 0.01, "the nearly clean first step is scaled far down");
    assert.throws(() => d.minSnrWeights("eps", 0), /gamma/);
    tf.tidy(() => {
      const { x0, noise, out, varValues } = hybridInputs();
      const t = [3, 90];
      const plain = d.trainingLosses({ out, kind: "eps", varValues }, x0, t, noise);
      const weighted = d.trainingLosses({ out, kind: "eps", varValues }, x0, t, noise, {
        minSnrGamma: gamma,
      });
      const [m0, m1] = plain.mse.dataSync();
      const [w0, w1] = weighted.mse.dataSync();
      ok(Math.abs(w0! - m0! * eps[3]!) < 1e-6 * m0!, `mse weighted at t = 3: ${w0} vs ${m0! * eps[3]!}`);
      ok(Math.abs(w1! - m1! * eps[90]!) < 1e-6 * m1!, "mse weighted at t = 90");
      assert.deepEqual(weighted.vb.dataSync(), plain.vb.dataSync(), "L_vlb unweighted");
      // With t as an int32 tensor (the trainer's traced losses) the weights are gathered in the graph, same values.
      const tt = tf.tensor1d(t, "int32") as Tensor1D;
      const inGraph = d.trainingLosses({ out, kind: "eps", varValues }, x0, tt, noise, {
        minSnrGamma: gamma,
      });
      const g = inGraph.loss.dataSync();
      const l = weighted.loss.dataSync();
      for (let i = 0; i < 2; i++) ok(Math.abs(g[i]! - l[i]!) < 1e-6 * Math.abs(l[i]!), "tensor t");
    });
  });
});
