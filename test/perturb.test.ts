// The UNet perturbations behind PAG, SEG and skip-layer guidance (src/nets/perturb.ts): each operation's
// defining property, the layer checks, the ONNX export building the same perturbed network, and autoguidance's
// layer-dropout weak model.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { initEngine, type Tensor1D, type Tensor4D, tf } from "../src/core/engine.ts";
import { Init } from "../src/core/layers.ts";
import type { StepInfo } from "../src/core/types.ts";
import { type Conditioning, unetModel } from "../src/nets/denoiser.ts";
import {
  identityAttention,
  type Perturbation,
  perturbationKey,
  SEG_INFINITE_SIGMA,
  segKernel,
  smoothQueries,
} from "../src/nets/perturb.ts";
import { type Block, UNet } from "../src/nets/unet.ts";
import { onnxModelFn, onnxUnavailable } from "../src/onnx/runtime.ts";
import { buildStrategy } from "../src/strategies/registry.ts";
import { cfgEps } from "../src/strategies/shared.ts";
import { relErr } from "./helpers/onnx.ts";
import { tinyUNetConfig } from "./helpers/tiny-unet.ts";

const CTX = 6;
let skipOnnx: string | undefined;
let unet: UNet;

const cond = (): Conditioning => ({
  tokens: tf.tensor2d([1, 2, 3, 0, 0, 0, 4, 5, 6, 7, 0, 0], [2, CTX], "int32"),
  mask: tf.tensor2d([1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0], [2, CTX]),
});

before(async () => {
  // TF.js on wasm (startOnnxTests picks the slower pure-JS backend); ONNX Runtime where it loads.
  await initEngine("wasm", { quiet: true });
  const why = await onnxUnavailable();
  skipOnnx = why ? `onnxruntime-node cannot load: ${why}` : undefined;
  const init = new Init(11);
  unet = new UNet(init, tinyUNetConfig({ vocabSize: 16, ctx: CTX }));
  // Random values everywhere (zero-initialised output convs would hide differences).
  for (const [, v] of unet.namedParameters()) v.assign(tf.mul(init.normal([...v.shape], 1), 0.2));
});

after(() => unet?.dispose());

const rnd = (shape: [number, number, number, number], seed: number) =>
  tf.randomNormal(shape, 0, 1, "float32", seed) as Tensor4D;

describe("the operations' defining properties", () => {
  test("identity attention without text keys is the value projection path", () => {
    const [q, k, v] = [rnd([2, 2, 9, 4], 1), rnd([2, 2, 9, 4], 2), rnd([2, 2, 9, 4], 3)];
    const out = identityAttention(q, k, v, 0);
    assert.deepEqual(out.dataSync(), v.dataSync());
    tf.dispose([q, k, v, out]);
  });

  test("identity attention with text keys: text columns keep their softmax weights, the rest goes to self", () => {
    const [b, h, t, l, ch] = [1, 2, 4, 3, 4];
    const q = rnd([b, h, t, ch], 4);
    const k = rnd([b, h, l + t, ch], 5);
    const v = rnd([b, h, l + t, ch], 6);
    const got = identityAttention(q, k, v, l).arraySync() as number[][][][];
    const [qa, ka, va] = [q.arraySync(), k.arraySync(), v.arraySync()] as [
      number[][][][],
      number[][][][],
      number[][][][],
    ];
    const s = 1 / Math.sqrt(ch);
    for (let hi = 0; hi < h; hi++) {
      for (let i = 0; i < t; i++) {
        const logits = ka[0]![hi]!.map((kr) => s * kr.reduce((a, x, j) => a + x * qa[0]![hi]![i]![j]!, 0));
        const m = Math.max(...logits);
        const e = logits.map((z) => Math.exp(z - m));
        const z = e.reduce((a, x) => a + x, 0);
        const pText = e.slice(0, l).map((x) => x / z);
        const self = 1 - pText.reduce((a, x) => a + x, 0);
        for (let c = 0; c < ch; c++) {
          const want =
            pText.reduce((a, p, j) => a + p * va[0]![hi]![j]![c]!, 0) + self * va[0]![hi]![l + i]![c]!;
          assert.ok(Math.abs(got[0]![hi]![i]![c]! - want) < 1e-5, `head ${hi} token ${i} channel ${c}`);
        }
      }
    }
    tf.dispose([q, k, v]);
  });

  test("smoothed queries: σ ≥ 9999 is the mean query; a constant grid stays constant; the taps are SEG's", () => {
    const q = rnd([1, 2, 16, 3], 7);
    const mean = smoothQueries(q, 4, 4, SEG_INFINITE_SIGMA);
    const want = tf.mul(tf.onesLike(q), tf.mean(q, 2, true));
    assert.ok(relErr(mean.dataSync(), want.dataSync()) < 1e-6);
    const flat = tf.fill([1, 2, 16, 3], 0.7) as Tensor4D;
    const blurred = smoothQueries(flat, 4, 4, 1.5);
    assert.ok(blurred.dataSync().every((x) => Math.abs(x - 0.7) < 1e-6));
    // SEG-SDXL: size ⌈6σ⌉ + 1 − ⌈6σ⌉ mod 2, capped at the side (odd); taps ∝ exp(−x²/2σ²) on linspace.
    assert.equal(segKernel(1, 64).length, 7);
    assert.equal(segKernel(1.2, 64).length, 9);
    assert.equal(segKernel(10, 8).length, 9);
    const k = segKernel(1, 64);
    assert.ok(Math.abs(k[3]! / k[4]! - Math.exp(0.5)) < 1e-5);
    assert.ok(Math.abs(k.reduce((a, x) => a + x, 0) - 1) < 1e-6);
    tf.dispose([q, mean, want, flat, blurred]);
  });

  test("smoothed queries: one interior value against a hand convolution with reflect padding", () => {
    const side = 6;
    const data = Float32Array.from({ length: side * side }, (_, i) => Math.sin(1.3 * i));
    const q = tf.tensor4d(data, [1, 1, side * side, 1]);
    const sigma = 0.8;
    const got = smoothQueries(q, side, side, sigma).dataSync();
    const taps = segKernel(sigma, side);
    const p = (taps.length - 1) / 2;
    const reflect = (i: number) => (i < 0 ? -i : i >= side ? 2 * (side - 1) - i : i);
    for (const [y, x] of [
      [0, 0],
      [2, 3],
      [5, 1],
    ] as const) {
      let want = 0;
      for (let a = -p; a <= p; a++) {
        for (let b = -p; b <= p; b++)
          want += taps[a + p]! * taps[b + p]! * data[reflect(y + a) * side + reflect(x + b)]!;
      }
      assert.ok(Math.abs(got[y * side + x]! - want) < 1e-5, `(${y}, ${x}): ${got[y * side + x]} vs ${want}`);
    }
    q.dispose();
  });

  test("skip: the skipped block returns its input (same as the UNet with that block replaced by the identity)", () => {
    const x = rnd([2, 8, 8, 3], 8);
    const t = tf.tensor1d([10, 500], "int32") as Tensor1D;
    const c = cond();
    const perturbed = unet.forward(
      x,
      t,
      c,
      unet.resolvePerturbation({ op: "skip", layers: ["middle_block.1"] }),
    );
    const block = unet.blocksByPath().get("middle_block.1")! as Block & { forward: Block["forward"] };
    const original = block.forward;
    block.forward = (h) => tf.clone(h);
    let manual: Tensor4D;
    try {
      manual = unet.forward(x, t, c);
    } finally {
      block.forward = original;
    }
    const plain = unet.forward(x, t, c);
    assert.deepEqual(perturbed.dataSync(), manual.dataSync());
    assert.ok(relErr(plain.dataSync(), perturbed.dataSync()) > 1e-4, "skipping changed the output");
    tf.dispose([x, t, c.tokens!, c.mask!, perturbed, manual, plain]);
  });

  test("layer names are checked against the UNet, listing the valid ones", () => {
    assert.throws(
      () => unet.resolvePerturbation({ op: "identity-attention", layers: ["middle_block.0"] }),
      /'middle_block.0' is not an attention block of this UNet \(valid: .*middle_block.1/,
    );
    assert.throws(
      () => unet.resolvePerturbation({ op: "skip", layers: ["input_blocks.3.0"] }),
      /'input_blocks.3.0' is not a block that keeps its input's shape/,
    );
    assert.throws(
      () => unet.resolvePerturbation({ op: "smoothed-queries", layers: ["middle_block.1"] }),
      /sigma: expected > 0/,
    );
    assert.throws(() => buildStrategy({ kind: "pag", layers: ["nope"] }, tinyModels()), /'nope' is not/);
    assert.equal(
      perturbationKey({ op: "smoothed-queries", sigma: 2, layers: ["b", "a"] }),
      "smoothed-queries:2@a,b",
    );
  });
});

function tinyModels() {
  const encode = (prompts: readonly string[]): Conditioning => ({
    tokens: tf.tensor2d(
      prompts.flatMap((p) => Array.from({ length: CTX }, (_, i) => (i < p.length % CTX ? 1 + i : 0))),
      [prompts.length, CTX],
      "int32",
    ),
    mask: tf.tensor2d(
      prompts.flatMap((p) => Array.from({ length: CTX }, (_, i) => (i < p.length % CTX ? 1 : 0))),
      [prompts.length, CTX],
    ),
  });
  return { model: unetModel(unet), encode, perturbed: (p: Perturbation) => unetModel(unet, p) };
}

describe("the ONNX export builds the same perturbed network", () => {
  const cases: Perturbation[] = [
    { op: "identity-attention", layers: ["middle_block.1", "output_blocks.1.1"] },
    { op: "smoothed-queries", layers: ["middle_block.1"], sigma: 1.5 },
    { op: "smoothed-queries", layers: ["input_blocks.3.1"], sigma: SEG_INFINITE_SIGMA },
    { op: "skip", layers: ["middle_block.1", "middle_block.2"] },
  ];
  for (const p of cases) {
    test(perturbationKey(p), (tc) => {
      if (skipOnnx) return tc.skip(skipOnnx);
      const x = rnd([2, 8, 8, 3], 9);
      const t = tf.tensor1d([10, 700], "int32") as Tensor1D;
      const c = cond();
      const ref = unet.forward(x, t, c, unet.resolvePerturbation(p));
      const plain = unet.forward(x, t, c);
      const fn = onnxModelFn(unet, { threads: 1, perturbation: p });
      try {
        const pred = fn(x, tf.cast(t, "float32") as Tensor1D, c);
        const got = tf.concat([pred.out, pred.varValues!], 3);
        const err = relErr(got.dataSync(), ref.dataSync());
        tc.diagnostic(`relative error ${err.toExponential(2)}`);
        assert.ok(err < 1e-5, `ONNX vs TF.js: ${err}`);
        assert.ok(relErr(plain.dataSync(), ref.dataSync()) > 1e-4, "the perturbation changed the output");
        tf.dispose([pred.out, pred.varValues!, got]);
      } finally {
        fn.runner.dispose();
        tf.dispose([x, t, c.tokens!, c.mask!, ref, plain]);
      }
    });
  }
});

describe("strategies on the perturbed network", () => {
  const STEP: StepInfo = { index: 0, t: 300, k: 2 };

  test("autoguidance with dropLayers: the weak model is the main one with those blocks skipped", () => {
    const before = tf.memory().numTensors;
    const models = tinyModels();
    const g = buildStrategy({ kind: "autoguidance", scale: 2, dropLayers: ["middle_block.1"] }, models).bind([
      "ab",
      "abcd",
    ]);
    const x = rnd([2, 8, 8, 3], 10);
    const c = models.encode(["ab", "abcd"]);
    const t = tf.fill([2], STEP.t, "int32") as Tensor1D;
    try {
      const got = g.denoise(x, STEP);
      const main = models.model(x, t, c);
      const weak = models.perturbed({ op: "skip", layers: ["middle_block.1"] })(x, t, c);
      const want = tf.tidy(() => cfgEps(main.out, weak.out, 2));
      assert.deepEqual(got.out.dataSync(), want.dataSync());
      assert.deepEqual(g.calls(STEP), { model: 2, weak: 0, classifier: 0, clip: 0 });
      tf.dispose([got.out, got.varValues!, main.out, main.varValues!, weak.out, weak.varValues!, want]);
    } finally {
      g.dispose();
      tf.dispose([x, c.tokens!, c.mask!, t]);
    }
    const leaked = tf.memory().numTensors - before;
    assert.equal(leaked, 0, `${leaked} tensors leaked`);
  });

  test("pag / seg / slg: one step is u + s·(c − u) + w·(c − c_p), three calls; s = 1 drops the unconditional call", () => {
    const models = tinyModels();
    const prompts = ["ab", "abcd"];
    const x = rnd([2, 8, 8, 3], 12);
    const t = tf.fill([2], STEP.t, "int32") as Tensor1D;
    const c = models.encode(prompts);
    const u = models.encode(["", ""]);
    const configs: [Record<string, unknown>, Perturbation][] = [
      [
        { kind: "pag", scale: 3, perturbScale: 2 },
        { op: "identity-attention", layers: ["middle_block.1"] },
      ],
      [
        { kind: "seg", scale: 3, perturbScale: 2, sigma: 1 },
        { op: "smoothed-queries", layers: ["middle_block.1"], sigma: 1 },
      ],
      [
        { kind: "slg", scale: 1, perturbScale: 2 },
        { op: "skip", layers: ["middle_block.1"] },
      ],
    ];
    for (const [raw, p] of configs) {
      const g = buildStrategy(raw, models).bind(prompts);
      try {
        const got = g.denoise(x, STEP);
        const pc = models.model(x, t, c);
        const pu = models.model(x, t, u);
        const pp = models.perturbed(p)(x, t, c);
        const s = raw.scale as number;
        const want = tf.tidy(() =>
          tf.add(s === 1 ? pc.out : cfgEps(pc.out, pu.out, s), tf.mul(2, tf.sub(pc.out, pp.out))),
        );
        assert.ok(relErr(got.out.dataSync(), want.dataSync()) < 1e-5, `${raw.kind}`);
        assert.equal(g.calls(STEP).model, s === 1 ? 2 : 3, `${raw.kind} calls`);
        tf.dispose([got.out, got.varValues!, want]);
        for (const pr of [pc, pu, pp]) tf.dispose([pr.out, pr.varValues!]);
      } finally {
        g.dispose();
      }
    }
    tf.dispose([x, t, c.tokens!, c.mask!, u.tokens!, u.mask!]);
  });
});
