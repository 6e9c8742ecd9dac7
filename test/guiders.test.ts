// The prediction-combining strategies against diffusers' guiders (and kornia's Laplacian pyramid) on fixed inputs:
// test/fixtures/guiders/ holds the guiders' own outputs, made by tools/strategies/make_guider_refs.py (commits in
// its manifest.json). Errors are relative to the reference's max |value|; float32 arithmetic in a different order
// lands near 1e-7, so 1e-5 fails any wrong formula by orders of magnitude. Also: the strategies' wiring (a
// strategy's step equals its combine function on the model's two predictions), CFG-Zero*'s zeroed steps, and the
// pyramid's exact reconstruction.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { createDiffusion } from "../src/core/diffusion.ts";
import { initEngine, type Tensor, type Tensor1D, type Tensor4D, tf } from "../src/core/engine.ts";
import { npyToFloat32, readNpy } from "../src/core/npy.ts";
import type { Prediction, StepInfo } from "../src/core/types.ts";
import { apgMixCombiner } from "../src/strategies/apg-mix.ts";
import { cfgZeroStarCombine } from "../src/strategies/cfg-zero-star.ts";
import { fdgCombine, fromPyramid, laplacianPyramid } from "../src/strategies/fdg.ts";
import { mamboGCombine } from "../src/strategies/mambo-g.ts";
import { buildStrategy, parseStrategyConfig } from "../src/strategies/registry.ts";
import { perturbedCombine } from "../src/strategies/shared.ts";
import type { Conditioning, GuidanceModels, ModelFn } from "../src/strategies/strategy.ts";
import { tcfgCombine } from "../src/strategies/tcfg.ts";

const DIR = join(import.meta.dirname, "fixtures", "guiders");
const manifest = JSON.parse(readFileSync(join(DIR, "manifest.json"), "utf8")) as {
  apg_mix_params: {
    scale: number;
    apgScale: number;
    apgStartStep: number;
    eta: number;
    normThreshold: number;
    momentum: number;
  };
};

function fixture(name: string): Tensor {
  const a = readNpy(join(DIR, `${name}.npy`));
  return tf.tensor(npyToFloat32(a), a.shape, "float32");
}

/** max |ours − ref| / max |ref|. */
function relErr(ours: Tensor, ref: Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(ours, ref))).dataSync()[0]! / tf.max(tf.abs(ref)).dataSync()[0]!);
}

const TOL = 1e-5;

function check(name: string, ours: Tensor, tc: { diagnostic(s: string): void }) {
  const ref = fixture(name);
  try {
    assert.deepEqual(ours.shape, ref.shape, `${name}: shape`);
    const e = relErr(ours, ref);
    tc.diagnostic(`${name}: relative error ${e.toExponential(2)}`);
    assert.ok(e <= TOL, `${name}: relative error ${e} > ${TOL}`);
  } finally {
    tf.dispose([ours, ref]);
  }
}

let c: Tensor4D;
let u: Tensor4D;

before(async () => {
  await initEngine("wasm", { quiet: true });
  c = fixture("cond") as Tensor4D;
  u = fixture("uncond") as Tensor4D;
});

describe("combiners match diffusers' guiders", () => {
  test("cfg-zero-star: α·u + s·(c − α·u)", (tc) =>
    check("cfg_zero_star_s3", cfgZeroStarCombine(c, u, 3), tc));
  test("tcfg: u projected on the dominant right singular vector, then cfg", (tc) =>
    check("tcfg_s3", tcfgCombine(c, u, 3), tc));
  test("mambo-g: scale damped by exp(−α‖c − u‖/‖u‖)", (tc) => {
    check("mambo_g_s5_a8", mamboGCombine(c, u, 5, 8), tc);
    check("mambo_g_s5_a1", mamboGCombine(c, u, 5, 1), tc);
  });
  test("fdg: kornia's Laplacian pyramid", (tc) => {
    const levels = laplacianPyramid(c, 3);
    for (const [i, l] of levels.entries()) check(`pyramid3_cond_level${i}`, l, tc);
  });
  test("fdg: per-level scales, with and without parallel weights", (tc) => {
    check("fdg_5_2", fdgCombine(c, u, [5, 2]), tc);
    check("fdg_6_3_1p5_pw", fdgCombine(c, u, [6, 3, 1.5], [0.5, 1, 0.2]), tc);
  });
  test("pag, seg, slg: u + s·(c − u) + w·(c − c_p), the perturbed guiders' combination", (tc) => {
    const cp = fixture("cond_perturbed") as Tensor4D;
    check("pag_s3_w2p5", perturbedCombine(c, u, cp, 3, 2.5), tc);
    check("seg_s3_w2", perturbedCombine(c, u, cp, 3, 2), tc);
    check("slg_s4_w2p8", perturbedCombine(c, u, cp, 4, 2.8), tc);
    cp.dispose();
  });
  test("apg-mix: cfg for k ≤ K, then apg, momentum carried through (four steps)", (tc) => {
    const p = manifest.apg_mix_params;
    const dc = fixture("apg_mix_cond");
    const du = fixture("apg_mix_uncond");
    const combiner = apgMixCombiner(p);
    const rows = tf.tidy(() => {
      const outs: Tensor[] = [];
      for (let k = 0; k < dc.shape[0]; k++) {
        const at = (t: Tensor) => tf.squeeze(tf.slice(t, [k], [1]), [0]) as Tensor4D;
        outs.push(combiner.step(at(dc), at(du), k));
      }
      return tf.stack(outs);
    });
    combiner.dispose();
    tf.dispose([dc, du]);
    check("apg_mix_out", rows, tc);
  });
});

describe("properties diffusers' checks do not cover", () => {
  test("the pyramid reconstructs its input", () => {
    const levels = laplacianPyramid(c, 3);
    const back = fromPyramid(levels);
    const e = relErr(back, c);
    tf.dispose([...levels, back]);
    assert.ok(e < 1e-6, `reconstruction error ${e}`);
  });

  test("fdg with one scale on every level is cfg; a level at scale 1 keeps the conditional band", () => {
    const a = fdgCombine(c, u, [3, 3]);
    const b = tf.add(u, tf.mul(3, tf.sub(c, u)));
    const e = relErr(a, b);
    const one = fdgCombine(c, u, [1, 4]);
    const want = tf.tidy(() => {
      const [c0, c1] = laplacianPyramid(c, 2);
      const [, u1] = laplacianPyramid(u, 2);
      return fromPyramid([c0!, tf.add(u1!, tf.mul(4, tf.sub(c1!, u1!))) as Tensor4D]);
    });
    const e1 = relErr(one, want);
    tf.dispose([a, b, one, want]);
    assert.ok(e < 1e-5, `fdg [3, 3] vs cfg 3: ${e}`);
    assert.ok(e1 < 1e-6, `fdg [1, 4]: ${e1}`);
  });

  test("fdg refuses image sizes its pyramid cannot split, naming the key", () => {
    const x = tf.zeros([1, 12, 12, 3]) as Tensor4D;
    assert.throws(() => fdgCombine(x, x, [2, 2]), /fdg: levels: 2 pyramid levels .* 12×12/);
    const y = tf.zeros([1, 8, 8, 3]) as Tensor4D;
    assert.throws(() => fdgCombine(y, y, [2, 2, 2, 2]), /4 pyramid levels need .* at least 16/);
    tf.dispose([x, y]);
    assert.throws(() => parseStrategyConfig({ kind: "fdg", levels: 1 }), /'fdg': levels: Too small/);
    assert.throws(() => parseStrategyConfig({ kind: "fdg", scales: [3, 2] }), /'fdg': scales: unknown key/);
  });
});

// ---------------------------------------------------------------- the strategies call their combiners

const B = 2;
const SIZE = 8;
const STEP: StepInfo = { index: 2, t: 66, k: 3 };

/** A fake model: eps = sin(x·(1 + id/7)) + id/10 with id the first token, variance values id/40. */
const fakeModel: ModelFn = (x, _t, cond) =>
  tf.tidy(() => {
    const id = tf.reshape(tf.cast(tf.slice(cond.tokens!, [0, 0], [x.shape[0], 1]), "float32"), [-1, 1, 1, 1]);
    const out = tf.add(tf.sin(tf.mul(x, tf.add(1, tf.div(id, 7)))), tf.div(id, 10)) as Tensor4D;
    return { out, kind: "eps" as const, varValues: tf.mul(tf.div(id, 40), tf.onesLike(x)) as Tensor4D };
  });

const encode = (prompts: readonly string[]): Conditioning => ({
  tokens: tf.tensor2d(
    prompts.map((p) => (p ? 3 + p.length : 0)),
    [prompts.length, 1],
    "int32",
  ),
});

const diffusion = createDiffusion({
  schedule: "cosine",
  steps: 100,
  respacing: "4",
  modelVarType: "learned_range",
});
const models: GuidanceModels = { model: fakeModel, encode, diffusion };
const PROMPTS = ["a red circle", "a blue square"];

function branches(x: Tensor4D): { c: Prediction; u: Prediction } {
  const t = tf.fill([B], STEP.t, "int32") as Tensor1D;
  const cc = encode(PROMPTS);
  const uc = encode(["", ""]);
  const r = { c: fakeModel(x, t, cc), u: fakeModel(x, t, uc) };
  tf.dispose([t, cc.tokens!, uc.tokens!]);
  return r;
}

function stepOf(raw: unknown, x: Tensor4D, step = STEP): Prediction {
  const g = buildStrategy(raw, models).bind(PROMPTS);
  try {
    return g.denoise(x, step);
  } finally {
    g.dispose();
  }
}

describe("each strategy's step is its combiner on the model's two predictions", () => {
  const cases: [unknown, (c: Tensor4D, u: Tensor4D) => Tensor4D][] = [
    [{ kind: "cfg-zero-star", scale: 4, zeroInitSteps: 1 }, (a, b) => cfgZeroStarCombine(a, b, 4)],
    [{ kind: "tcfg", scale: 4 }, (a, b) => tcfgCombine(a, b, 4)],
    [{ kind: "mambo-g", scale: 4, alpha: 2 }, (a, b) => mamboGCombine(a, b, 4, 2)],
    [{ kind: "fdg", scale: 4, lowScale: 2, levels: 3 }, (a, b) => fdgCombine(a, b, [4, 2, 2])],
    [
      { kind: "fdg", scale: 4, lowScale: 2, parallelWeight: 0.5 },
      (a, b) => fdgCombine(a, b, [4, 2], [0.5, 0.5]),
    ],
  ];
  for (const [raw, combine] of cases) {
    test((raw as { kind: string }).kind, () => {
      const before = tf.memory().numTensors;
      const x = tf.randomNormal([B, SIZE, SIZE, 3], 0, 1, "float32", 5) as Tensor4D;
      const got = stepOf(raw, x);
      const { c: pc, u: pu } = branches(x);
      const want = combine(pc.out, pu.out);
      assert.deepEqual(got.out.dataSync(), want.dataSync());
      assert.deepEqual(
        got.varValues!.dataSync(),
        pc.varValues!.dataSync(),
        "variance from the conditional half",
      );
      tf.dispose([x, got.out, got.varValues!, pc.out, pc.varValues!, pu.out, pu.varValues!, want]);
      assert.equal(tf.memory().numTensors, before);
    });
  }

  test("cfg-zero-star: the first K steps output zero, keep the variance and make one call", () => {
    let rows = 0;
    const counting: ModelFn = (x, t, cond) => {
      rows += x.shape[0];
      return fakeModel(x, t, cond);
    };
    const g = buildStrategy(
      { kind: "cfg-zero-star", scale: 4, zeroInitSteps: 2 },
      { ...models, model: counting },
    ).bind(PROMPTS);
    const x = tf.randomNormal([B, SIZE, SIZE, 3], 0, 1, "float32", 6) as Tensor4D;
    try {
      for (const k of [0, 1]) {
        const p = g.denoise(x, { ...STEP, k });
        assert.ok(p.out.dataSync().every((v) => v === 0));
        assert.ok(p.varValues!.dataSync().every((v) => v > 0));
        assert.equal(g.calls({ ...STEP, k }).model, 1);
        tf.dispose([p.out, p.varValues!]);
      }
      assert.equal(rows, 2 * B);
      const p = g.denoise(x, { ...STEP, k: 2 });
      assert.ok(p.out.dataSync().some((v) => v !== 0));
      assert.equal(g.calls({ ...STEP, k: 2 }).model, 2);
      tf.dispose([p.out, p.varValues!]);
    } finally {
      x.dispose();
      g.dispose();
    }
  });

  test("apg-mix on x0: cfg while k ≤ K, apg after, with the momentum buffer reset by a new run", () => {
    const cfgMix = { kind: "apg-mix", scale: 3, apgScale: 5, apgStartStep: 0, momentum: -0.5, eta: 0 };
    const g = buildStrategy(cfgMix, models).bind(PROMPTS);
    const x = tf.randomNormal([B, SIZE, SIZE, 3], 0, 1, "float32", 7) as Tensor4D;
    const x0 = (p: Prediction) => diffusion.predictXstartFromEps(x, STEP.index, p.out);
    try {
      const { c: pc, u: pu } = branches(x);
      const [dc, du] = [x0(pc), x0(pu)];
      const ref = apgMixCombiner(parseStrategyConfig(cfgMix) as never);
      for (const k of [0, 1, 0]) {
        const got = g.denoise(x, { ...STEP, k });
        assert.equal(got.kind, "x0");
        if (k === 0) ref.dispose();
        const want = ref.step(dc, du, k);
        assert.ok(relErr(got.out, want) < 1e-6, `step k = ${k}`);
        tf.dispose([got.out, got.varValues!, want]);
      }
      ref.dispose();
      tf.dispose([pc.out, pc.varValues!, pu.out, pu.varValues!, dc, du]);
    } finally {
      x.dispose();
      g.dispose();
    }
  });
});
