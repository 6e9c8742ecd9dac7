// TensorFlow.js functions traced into ONNX graphs (src/onnx/traced.ts). Guidance gradients (guide-grad.ts): the
// noised classifier's and the noised CLIP's gradients on ONNX Runtime equal TensorFlow.js's, at several batches and
// on later calls with other labels, timesteps and text embeddings (so those are graph inputs, not constants of the
// first call); clean-clip's gradient on x̂0, as the zoo's guide replays it; a strategy-style objective of its own (CLIP on a rescaled x with a table gathered at t) traces too;
// an objective that reads an input's values through JavaScript is refused; no tensor is left behind. The metrics'
// forwards (metric-models.ts): evaluation-CLIP image and text embeddings, the noised CLIP at t = 0 and the
// classifier's logits equal TensorFlow.js's.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  initEngine,
  type Tensor,
  type Tensor1D,
  type Tensor2D,
  type Tensor4D,
  tf,
} from "../src/core/engine.ts";
import { Init } from "../src/core/layers.ts";
import type { EvalClip } from "../src/nets/eval-clip.ts";
import { OnnxGuideGrad } from "../src/onnx/guide-grad.ts";
import { metricModelsOn } from "../src/onnx/metric-models.ts";
import { onnxUnavailable } from "../src/onnx/runtime.ts";
import { cleanClipGrad, cleanClipLoss } from "../src/strategies/clean-clip.ts";
import { loadZooModel } from "../src/zoo/registry.ts";
import { loadZoo, type Zoo } from "../src/zoo/zoo.ts";
import { relErr } from "./helpers/onnx.ts";
import { makeTinyZoo } from "./helpers/tiny-zoo.ts";

process.env.GUIDANCE_LAB_QUIET = "1";
const dir = mkdtempSync(join(tmpdir(), "gl-guide-grad-"));
let skip: string | undefined;
let tfjs: Zoo;
let onnx: Zoo;
let models = "";

before(async () => {
  await initEngine("wasm", { quiet: true });
  const why = await onnxUnavailable();
  if (why) {
    skip = `onnxruntime-node cannot load: ${why}`;
    return;
  }
  models = await makeTinyZoo(dir, ["denoiser", "classifier", "noised-clip", "eval-clip"]);
  tfjs = loadZoo({}, models, "tfjs");
  onnx = loadZoo({}, models, "onnx");
});

after(() => {
  tfjs?.dispose();
  onnx?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

const data = (t: Tensor4D) => t.dataSync() as Float32Array;

describe("guidance gradients on ONNX Runtime", () => {
  test("classifier and CLIP gradients equal TensorFlow.js's (batches 3 and 1, new labels/t/z on a reused graph)", (t) => {
    if (skip) return t.skip(skip);
    const init = new Init(7);
    for (const n of [3, 1]) {
      for (const round of [0, 1]) {
        const x = init.normal([n, 16, 16, 3], 1) as Tensor4D;
        const ts = tf.tensor1d(
          Array.from({ length: n }, (_, i) => 999 - 310 * i - 77 * round),
          "int32",
        ) as Tensor1D;
        const y = tf.tensor1d(
          Array.from({ length: n }, (_, i) => (5 * i + 11 * round) % 24),
          "int32",
        ) as Tensor1D;
        const z = tfjs.models.clipText!(
          Array.from({ length: n }, (_, i) => ((i + round) % 2 ? "a red circle" : "a blue square")),
        );
        const before = tf.memory().numTensors;
        try {
          for (const [what, a, b] of [
            [
              "classifier",
              tfjs.models.classifier!.condGrad(x, ts, y, 3),
              onnx.models.classifier!.condGrad(x, ts, y, 3),
            ],
            ["clip", tfjs.models.clip!.condGrad(x, ts, z, 2), onnx.models.clip!.condGrad(x, ts, z, 2)],
          ] as const) {
            assert.deepEqual(b.shape, a.shape, `${what} n=${n}: shape`);
            const err = relErr(data(b), data(a));
            assert.ok(err <= 1e-5, `${what} n=${n} round ${round}: relative error ${err}`);
            assert.ok(Math.max(...data(a).map(Math.abs)) > 0, `${what}: a non-zero gradient`);
            tf.dispose([a, b]);
          }
          assert.equal(tf.memory().numTensors, before, `n=${n}: no tensor left behind`);
        } finally {
          tf.dispose([x, ts, y, z]);
        }
      }
    }
  });

  test("a strategy's own objective traces (CLIP of a t-dependent rescaling of x)", (t) => {
    if (skip) return t.skip(skip);
    const clip = tfjs.noisedClip!;
    const table = Float32Array.from({ length: 1000 }, (_, i) => 1 / (1 + i / 500));
    const objective = (x: Tensor4D, inputs: Readonly<Record<string, Tensor>>) =>
      tf.tidy(() => {
        const k = tf.reshape(tf.gather(tf.tensor1d(table), inputs.t!), [-1, 1, 1, 1]);
        return clip.similarity(
          tf.mul(x, k) as Tensor4D,
          tf.zerosLike(inputs.t!) as Tensor1D,
          inputs.z as Tensor2D,
        );
      });
    const engine = new OnnxGuideGrad("rescaled-clip", objective);
    const init = new Init(3);
    try {
      for (const tv of [50, 800]) {
        const x = init.normal([2, 16, 16, 3], 1) as Tensor4D;
        const ts = tf.tensor1d([tv, tv], "int32");
        const z = tfjs.models.clipText!(["a red circle", "a green square"]);
        const want = tf.tidy(() => tf.grad((xv) => objective(xv as Tensor4D, { t: ts, z }))(x)) as Tensor4D;
        const got = engine.grad(x, { t: ts, z });
        const err = relErr(data(got), data(want));
        assert.ok(err <= 1e-5, `t=${tv}: relative error ${err}`);
        tf.dispose([x, ts, z, want, got]);
      }
      assert.equal(engine.traced.length, 1, "one graph for one set of shapes");
    } finally {
      engine.dispose();
    }
  });

  test("clean-clip's ∇x̂0 (backprop: false) replays as a graph equal to TensorFlow.js's; the zoo's guide uses it", (t) => {
    if (skip) return t.skip(skip);
    const plain = tfjs.models.guide!("eval-clip");
    const onOrt = onnx.models.guide!("eval-clip");
    assert.equal(plain.cleanClip!.lossGrad, undefined, "TensorFlow.js's guide takes the gradient itself");
    assert.ok(onOrt.cleanClip!.lossGrad, "ONNX Runtime's guide replays it");
    // Traced without the fallback (the spherical distance's arcsin included).
    const clip = plain.cleanClip!;
    const engine = new OnnxGuideGrad("clean-clip", (x, { zText }) =>
      cleanClipLoss(clip, x, zText as Tensor2D),
    );
    const init = new Init(5);
    try {
      for (const prompts of [["a red circle", "a green square", "a blue triangle"], ["a red square"]]) {
        const x = tf.tidy(() =>
          tf.clipByValue(init.normal([prompts.length, 16, 16, 3], 0.6), -1, 1),
        ) as Tensor4D;
        const z = plain.cleanClipText!(prompts);
        const before = tf.memory().numTensors;
        const want = cleanClipGrad(clip, x, z);
        for (const [what, got] of [
          ["traced", engine.grad(x, { zText: z })],
          ["zoo guide", onOrt.cleanClip!.lossGrad!(x, z)],
        ] as const) {
          const err = relErr(data(got), data(want));
          assert.ok(err <= 1e-5, `${what}, batch ${prompts.length}: relative error ${err}`);
          got.dispose();
        }
        want.dispose();
        assert.equal(tf.memory().numTensors, before, "no tensor left behind");
        tf.dispose([x, z]);
      }
      assert.equal(engine.traced.length, 2, "one graph per batch size");
    } finally {
      engine.dispose();
    }
  });

  test("an objective that reads an input's values through JavaScript is refused, naming it", (t) => {
    if (skip) return t.skip(skip);
    const clip = tfjs.noisedClip!;
    const objective = (x: Tensor4D, inputs: Readonly<Record<string, Tensor>>) =>
      tf.tidy(() => {
        // The timestep read as a number and turned back into a tensor: the graph would freeze the first call's t.
        const t0 = inputs.t!.dataSync()[0]!;
        return clip.similarity(
          tf.mul(x, 1 / (1 + t0)) as Tensor4D,
          inputs.t as Tensor1D,
          inputs.z as Tensor2D,
        );
      });
    const engine = new OnnxGuideGrad("peeking", objective);
    const x = tf.ones([1, 16, 16, 3]) as Tensor4D;
    const ts = tf.tensor1d([10], "int32");
    const z = tfjs.models.clipText!(["a red circle"]);
    try {
      assert.throws(
        () => engine.grad(x, { t: ts, z }),
        /peeking guidance gradient.*traces on two inputs differ/,
      );
      // With fallback on (as the zoo's guides have it), the same objective is computed by TensorFlow.js instead.
      const kept = new OnnxGuideGrad("peeking", objective, { fallback: true });
      const before = tf.memory().numTensors;
      try {
        const got = kept.grad(x, { t: ts, z });
        const want = tf.tidy(() => tf.grad((xv) => objective(xv as Tensor4D, { t: ts, z }))(x)) as Tensor4D;
        assert.deepEqual(data(got), data(want), "the TensorFlow.js gradient");
        tf.dispose([got, want]);
        assert.equal(tf.memory().numTensors, before, "no tensor left behind");
      } finally {
        kept.dispose();
      }
    } finally {
      engine.dispose();
      tf.dispose([x, ts, z]);
    }
  });

  test("the metrics' forwards equal TensorFlow.js's (evaluation CLIP, noised CLIP and classifier at t = 0)", (t) => {
    if (skip) return t.skip(skip);
    const evalClip = loadZooModel("eval-clip", models).model as EvalClip;
    const onnxModels = metricModelsOn("onnx");
    const init = new Init(5);
    try {
      const e = onnxModels.evalClip(evalClip);
      const c = onnxModels.noisedClip(tfjs.noisedClip!);
      const k = onnxModels.classifier(tfjs.noisedClassifier!);
      for (const n of [4, 2]) {
        const before = tf.memory().numTensors;
        const x = init.normal([n, 16, 16, 3], 1) as Tensor4D;
        const t0 = tf.zeros([n], "int32") as Tensor1D;
        const ids = Array.from({ length: n * 16 }, (_, i) =>
          i % 16 < 3 + (i >> 4) ? 1 + ((i * 7) % 30) : 0,
        );
        const tokens = tf.tensor2d(ids, [n, 16], "int32") as Tensor2D;
        const mask = tf.tensor2d(
          ids.map((id) => (id === 0 ? 0 : 1)),
          [n, 16],
        ) as Tensor2D;
        for (const [what, a, b] of [
          ["eval-CLIP image", evalClip.embedImage(x), e.embedImage(x)],
          ["eval-CLIP text", evalClip.embedText(tokens, mask), e.embedText(tokens, mask)],
          ["noised CLIP image at t=0", tfjs.noisedClip!.embedImage(x, t0), c.embedImage(x, t0)],
          ["classifier logits at t=0", tfjs.noisedClassifier!.logits(x, t0), k.logits(x, t0)],
        ] as const) {
          assert.deepEqual(b.shape, a.shape, `${what} n=${n}: shape`);
          const err = relErr(b.dataSync(), a.dataSync());
          assert.ok(err <= 1e-5, `${what} n=${n}: relative error ${err}`);
          tf.dispose([a, b]);
        }
        tf.dispose([x, t0, tokens, mask]);
        assert.equal(tf.memory().numTensors, before, `n=${n}: no tensor left behind`);
      }
    } finally {
      onnxModels.dispose();
      evalClip.dispose();
    }
  });
});
