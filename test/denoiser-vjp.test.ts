// The denoiser that clean-clip's backprop differentiates (src/onnx/denoiser-vjp.ts): its backward, computed in
// chunks of rows on TensorFlow.js or as traced ONNX graphs, equals the plain tape's gradient through the UNet, with
// a batch that does not divide into the chunks (the last one padded); its forward is the sampler's; nothing leaks,
// and the outer tape survives the nested gradients.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { initEngine, type Tensor, type Tensor1D, type Tensor4D, tf } from "../src/core/engine.ts";
import { Init } from "../src/core/layers.ts";
import { type ModelFn, unetModel } from "../src/nets/denoiser.ts";
import { type Conditioning, UNet } from "../src/nets/unet.ts";
import { differentiableDenoiser } from "../src/onnx/denoiser-vjp.ts";
import { denoiserOn } from "../src/onnx/runtime.ts";
import { relErr } from "./helpers/onnx.ts";
import { tinyUNetConfig } from "./helpers/tiny-unet.ts";

const B = 5;
const CTX = 4;
let unet: UNet;
let x: Tensor4D;
let t: Tensor1D;
let cond: Conditioning;
let w: Tensor4D;

before(async () => {
  await initEngine("wasm", { quiet: true });
  unet = new UNet(new Init(3), tinyUNetConfig({ vocabSize: 16, ctx: CTX }));
  x = tf.randomNormal([B, 8, 8, 3], 0, 1, "float32", 1) as Tensor4D;
  t = tf.tensor1d([10, 200, 400, 700, 999]);
  cond = {
    tokens: tf.tensor2d([1, 2, 3, 0, 4, 5, 0, 0, 6, 7, 8, 9, 2, 0, 0, 0, 3, 3, 3, 0], [B, CTX], "int32"),
    mask: tf.tensor2d([1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0], [B, CTX]),
  };
  // Weights on every output channel (ε and the learned-range values), as a loss of both would put on them.
  w = tf.randomNormal([B, 8, 8, 6], 0, 1, "float32", 2) as Tensor4D;
});

after(() => {
  tf.dispose([x, t, w, cond.tokens!, cond.mask!]);
  unet?.dispose();
});

/** ∇ₓ Σ w·[ε, v] through `model`, and the forward's ε. */
function gradOf(model: ModelFn): { grad: Float32Array; eps: Float32Array } {
  return tf.tidy(() => {
    let eps: Tensor | undefined;
    const grad = tf.grad((xv) => {
      const p = model(xv as Tensor4D, t, cond);
      eps = tf.keep(p.out);
      return tf.sum(tf.mul(tf.concat([p.out, p.varValues!], -1), w));
    })(x);
    const out = { grad: grad.dataSync() as Float32Array, eps: eps!.dataSync() as Float32Array };
    eps!.dispose();
    return out;
  });
}

describe("differentiableDenoiser", () => {
  for (const runtime of ["tfjs", "onnx"] as const) {
    test(`${runtime}: chunked backward (chunks of 2, the last padded) equals the tape's, no leak`, () => {
      const reference = gradOf(unetModel(unet));
      const f = denoiserOn(unet, runtime);
      const d = differentiableDenoiser(unet, f.raw, runtime, 2);
      try {
        gradOf(d.model); // traces the ONNX graph (first call per chunk shape)
        const before = tf.memory().numTensors;
        const got = gradOf(d.model);
        assert.equal(tf.memory().numTensors, before, "tensors leaked");
        const tol = runtime === "tfjs" ? 1e-6 : 1e-5;
        const g = relErr(got.grad, reference.grad);
        assert.ok(g <= tol, `gradient differs by ${g.toExponential(2)} of its largest value (> ${tol})`);
        const e = relErr(got.eps, reference.eps);
        assert.ok(e <= tol, `forward differs by ${e.toExponential(2)} (> ${tol})`);
        // The outer tape was restored: a plain gradient afterwards still works and matches.
        assert.ok(relErr(gradOf(unetModel(unet)).grad, reference.grad) === 0);
      } finally {
        d.dispose();
        f.dispose();
      }
    });
  }
});
