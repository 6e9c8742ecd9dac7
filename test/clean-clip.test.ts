// clean-clip guidance: its gradient against finite differences (on x0 alone, and through the denoiser), the guided
// prediction's formula in both modes, no tensor leak, and guides chosen by name (`model: NAME`).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createDiffusion, type GaussianDiffusion } from "../src/core/diffusion.ts";
import { initEngine, type Tensor1D, type Tensor4D, tf } from "../src/core/engine.ts";
import { Init } from "../src/core/layers.ts";
import { sampleDdim, sampleDdpm, seededNoise } from "../src/core/samplers.ts";
import type { StepInfo } from "../src/core/types.ts";
import { unetModel } from "../src/nets/denoiser.ts";
import type { EvalClip } from "../src/nets/eval-clip.ts";
import { UNet } from "../src/nets/unet.ts";
import { predictedX0 } from "../src/strategies/apg.ts";
import { cleanClipGrad, cleanClipLoss } from "../src/strategies/clean-clip.ts";
import { buildStrategy } from "../src/strategies/registry.ts";
import { type Conditioning, type GuidanceModels, hooksOf } from "../src/strategies/strategy.ts";
import { TINY_CLEAN_CLIP_CTX, tinyCleanClip, tinyCleanClipText } from "./helpers/tiny-clean-clip.ts";
import { tinyUNetConfig } from "./helpers/tiny-unet.ts";

const SIZE = 8;
const CTX = TINY_CLEAN_CLIP_CTX;
const PROMPTS = ["a red circle", "a blue square"];
const B = PROMPTS.length;

function encode(prompts: readonly string[]): Conditioning {
  const tokens = new Int32Array(prompts.length * CTX);
  const mask = new Float32Array(prompts.length * CTX);
  prompts.forEach((p, i) => {
    p.split(/\s+/)
      .filter(Boolean)
      .slice(0, CTX)
      .forEach((w, j) => {
        tokens[i * CTX + j] = 1 + ([...w].reduce((a, c) => a + c.charCodeAt(0), 0) % 30);
        mask[i * CTX + j] = 1;
      });
  });
  return {
    tokens: tf.tensor2d(tokens, [prompts.length, CTX], "int32"),
    mask: tf.tensor2d(mask, [prompts.length, CTX]),
  };
}

let unet: UNet;
let clip: EvalClip;
let other: EvalClip;
let diffusion: GaussianDiffusion;

before(async () => {
  await initEngine("wasm", { quiet: true });
  unet = new UNet(new Init(1), tinyUNetConfig({ vocabSize: 32, ctx: CTX }, { imageSize: SIZE }));
  clip = tinyCleanClip(SIZE, 5);
  other = tinyCleanClip(SIZE, 6);
  diffusion = createDiffusion({
    schedule: "cosine",
    steps: 100,
    respacing: "4",
    modelVarType: "learned_range",
  });
});

after(() => {
  for (const m of [unet, clip, other]) m?.dispose();
});

function models(extra: Partial<GuidanceModels> = {}): GuidanceModels {
  return {
    model: unetModel(unet),
    encode,
    cleanClip: clip,
    cleanClipText: (p) => tinyCleanClipText(clip, p, encode),
    diffusion,
    ...extra,
  };
}

/** Central differences of f at the `k` coordinates of x where |analytic| is largest. */
function checkFiniteDifferences(
  f: (x: Tensor4D) => number,
  x: Tensor4D,
  analytic: Float32Array,
  what: string,
  k = 6,
  h = 2e-3,
) {
  const base = x.dataSync() as Float32Array;
  const order = [...analytic.keys()].sort((a, b) => Math.abs(analytic[b]!) - Math.abs(analytic[a]!));
  const maxAbs = Math.abs(analytic[order[0]!]!);
  assert.ok(maxAbs > 0, `${what}: the gradient is not all zero`);
  for (const i of order.slice(0, k)) {
    const at = (d: number) => {
      const v = Float32Array.from(base);
      v[i] = v[i]! + d;
      const xt = tf.tensor4d(v, x.shape);
      try {
        return f(xt);
      } finally {
        xt.dispose();
      }
    };
    const fd = (at(h) - at(-h)) / (2 * h);
    const err = Math.abs(fd - analytic[i]!);
    assert.ok(
      err <= 0.03 * maxAbs,
      `${what}: coordinate ${i}: finite difference ${fd} vs gradient ${analytic[i]} (max |g| ${maxAbs})`,
    );
  }
}

const STEP: StepInfo = { index: 2, t: 66, k: 1 };

describe("clean-clip: gradients", () => {
  test("∇_{x0} L matches finite differences of the spherical-distance loss", () => {
    const x0 = tf.randomUniform([B, SIZE, SIZE, 3], -1, 1, "float32", 3) as Tensor4D;
    const z = tinyCleanClipText(clip, PROMPTS, encode);
    const g = cleanClipGrad(clip, x0, z);
    const loss = (x: Tensor4D) => tf.tidy(() => cleanClipLoss(clip, x, z).dataSync()[0]!);
    checkFiniteDifferences(loss, x0, g.dataSync() as Float32Array, "∇x0 L");
    tf.dispose([x0, z, g]);
  });

  for (const backprop of [true, false]) {
    test(`backprop ${backprop}: ε' = ε + s·√(1−ᾱ)·∇L, ∇ ${backprop ? "through the denoiser (finite differences in x_t)" : "on x̂0"}`, () => {
      const s = 7;
      const m = models();
      const x = seededNoise("x")(0, [B, SIZE, SIZE, 3]);
      const z = tinyCleanClipText(clip, PROMPTS, encode);
      const cond = encode(PROMPTS);
      const plain = (xv: Tensor4D) => unetModel(unet)(xv, tf.fill([B], STEP.t, "int32") as Tensor1D, cond);
      // L(x̂0(x_t)) as a function of x_t (the denoiser's forward included).
      const lossAtXt = (xv: Tensor4D) =>
        tf.tidy(
          () => cleanClipLoss(clip, predictedX0(diffusion, plain(xv), xv, STEP.index), z).dataSync()[0]!,
        );
      const g = buildStrategy({ kind: "clean-clip", scale: s, backprop }, m).bind(PROMPTS);
      try {
        const guided = g.denoise(x, STEP);
        const ref = plain(x);
        const coef = s * diffusion.sqrtOneMinusAlphasCumprod[STEP.index]!;
        const implied = tf.tidy(() => tf.div(tf.sub(guided.out, ref.out), coef)).dataSync() as Float32Array;
        if (backprop) {
          checkFiniteDifferences(lossAtXt, x, implied, "∇x_t L(x̂0(x_t))");
        } else {
          const x0 = predictedX0(diffusion, ref, x, STEP.index);
          const want = cleanClipGrad(clip, x0, z).dataSync() as Float32Array;
          let worst = 0;
          for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(want[i]! - implied[i]!));
          assert.ok(worst < 1e-4 * Math.max(...want.map(Math.abs)) + 1e-5, `∇x̂0 L: max diff ${worst}`);
          x0.dispose();
        }
        assert.deepEqual(guided.varValues!.dataSync(), ref.varValues!.dataSync(), "variance passes through");
        tf.dispose([guided.out, guided.varValues!, ref.out, ref.varValues!]);
      } finally {
        g.dispose();
        tf.dispose([x, z, cond.tokens!, cond.mask!]);
      }
    });
  }

  test("backprop differentiates models.gradModel when given (the ONNX-Runtime denoiser has no tape)", () => {
    let gradCalls = 0;
    let fwdCalls = 0;
    const tape = unetModel(unet);
    const m = models({
      model: (x, t, c) => {
        fwdCalls++;
        return tape(x, t, c);
      },
      gradModel: (x, t, c) => {
        gradCalls++;
        return tape(x, t, c);
      },
    });
    for (const backprop of [true, false]) {
      const g = buildStrategy({ kind: "clean-clip", scale: 1, backprop }, m).bind(PROMPTS);
      const x = seededNoise("x")(0, [B, SIZE, SIZE, 3]);
      const p = g.denoise(x, STEP);
      tf.dispose([x, p.out, p.varValues!]);
      g.dispose();
    }
    assert.deepEqual({ gradCalls, fwdCalls }, { gradCalls: 1, fwdCalls: 1 });
  });
});

describe("clean-clip: sampling", () => {
  for (const [backprop, sampler] of [
    [true, "ddpm"],
    [false, "ddim"],
  ] as const) {
    test(`no tensor leak and the guide's loss goes down (backprop ${backprop}, ${sampler})`, (tc) => {
      const final = (raw: unknown) => {
        const g = buildStrategy(raw, models()).bind(PROMPTS);
        const x = seededNoise("x_T")(0, [B, SIZE, SIZE, 3]);
        const opts = { noise: seededNoise(2), ...hooksOf(g) };
        const y =
          sampler === "ddim"
            ? sampleDdim(diffusion, g.denoise, x, opts)
            : sampleDdpm(diffusion, g.denoise, x, opts);
        g.dispose();
        x.dispose();
        return y;
      };
      const plain = final({ kind: "none" });
      const before = tf.memory().numTensors;
      const guided = final({ kind: "clean-clip", scale: 30, backprop });
      assert.equal(tf.memory().numTensors, before + 1, "only the sample is left");
      const z = tinyCleanClipText(clip, PROMPTS, encode);
      const [a, b] = [plain, guided].map((y) => tf.tidy(() => cleanClipLoss(clip, y, z).dataSync()[0]!));
      tc.diagnostic(`spherical distance loss: unguided ${a!.toFixed(4)}, guided ${b!.toFixed(4)}`);
      assert.ok(b! < a!, `guided ${b} should be below unguided ${a}`);
      tf.dispose([plain, guided, z]);
    });
  }
});

describe("clean-clip: the guide by name", () => {
  const guide = (name: string): Partial<GuidanceModels> => {
    if (name === "other-clip")
      return { cleanClip: other, cleanClipText: (p) => tinyCleanClipText(other, p, encode) };
    if (name === "a-classifier") return { classifier: { condGrad: (x) => tf.zerosLike(x) } };
    throw new Error(`no zoo model '${name}'`);
  };

  test("model: NAME replaces the default guide", () => {
    const x = seededNoise("x")(0, [B, SIZE, SIZE, 3]);
    const run = (raw: unknown) => {
      const g = buildStrategy(raw, models({ guide })).bind(PROMPTS);
      const p = g.denoise(x, STEP);
      const out = p.out.dataSync() as Float32Array;
      tf.dispose([p.out, p.varValues!]);
      g.dispose();
      return out;
    };
    const byDefault = run({ kind: "clean-clip", scale: 5 });
    const named = run({ kind: "clean-clip", scale: 5, model: "other-clip" });
    const direct = (() => {
      const m = models({ cleanClip: other, cleanClipText: (p) => tinyCleanClipText(other, p, encode) });
      const g = buildStrategy({ kind: "clean-clip", scale: 5 }, m).bind(PROMPTS);
      const p = g.denoise(x, STEP);
      const out = p.out.dataSync() as Float32Array;
      tf.dispose([p.out, p.varValues!]);
      g.dispose();
      return out;
    })();
    assert.deepEqual(named, direct, "the named guide is the one used");
    assert.notDeepEqual(named, byDefault);
    x.dispose();
  });

  test("a guide of the wrong kind, an unknown one, or no zoo: errors naming the model", () => {
    assert.throws(
      () => buildStrategy({ kind: "clean-clip", model: "a-classifier" }, models({ guide })),
      /'clean-clip': model: 'a-classifier' provides classifier, not cleanClip, cleanClipText/,
    );
    assert.throws(
      () => buildStrategy({ kind: "clip", model: "other-clip" }, models({ guide })),
      /'clip': model: 'other-clip' provides cleanClip, cleanClipText, not clip, clipText/,
    );
    assert.throws(
      () => buildStrategy({ kind: "clean-clip", model: "nope" }, models({ guide })),
      /no zoo model 'nope'/,
    );
    assert.throws(() => buildStrategy({ kind: "clean-clip", model: "x" }, models()), /needs models\.guide/);
    assert.throws(() => buildStrategy({ kind: "cfg", model: "x" }, models()), /model: unknown key/);
  });
});
