// Every UNet kind the exporter handles, on tiny configs with random (non-zero) parameters: the ONNX Runtime output
// must equal the TensorFlow.js forward to 1e-5 relative. Kinds: GLIDE super-resolution (low-res input upsampled in
// the graph), GLIDE inpainting (image·mask and mask channels; absent inputs are zeros), both at once, and
// guided-diffusion's class-conditional UNet (label embedding, new attention order, learned sigma); and the noised
// CLIP's image and text towers (forward-only embeddings).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Tensor, Tensor1D, Tensor2D, Tensor4D } from "../src/core/engine.ts";
import { tf } from "../src/core/engine.ts";
import { Init } from "../src/core/layers.ts";
import { type ClipConfig, ClipModel } from "../src/nets/clip.ts";
import { type Conditioning, UNet, type UNetConfig } from "../src/nets/unet.ts";
import { OnnxClip, onnxModelFn } from "../src/onnx/runtime.ts";
import { exportTextConfig, exportUNetConfig, relErr, startOnnxTests } from "./helpers/onnx.ts";

const TOL = 1e-5;
let skip: string | undefined;
const errors: string[] = [];

after(() => console.log(`# max relative errors: ${errors.join(", ")}`));

before(async () => {
  skip = await startOnnxTests();
});

const base: UNetConfig = exportUNetConfig();
const text = exportTextConfig();

function randomUNet(seed: number, cfg: UNetConfig): { unet: UNet; init: Init } {
  const init = new Init(seed);
  const unet = new UNet(init, cfg);
  // Every parameter random, so zero-initialised biases and output convs are exercised too.
  for (const [, v] of unet.namedParameters()) v.assign(tf.mul(init.normal([...v.shape], 1), 0.2));
  return { unet, init };
}

function textCond(b: number): Conditioning {
  const ids = [1, 2, 3, 0, 0, 0, 4, 5, 6, 7, 8, 9, 10, 11, 0, 0, 0, 0].slice(0, b * 6);
  return {
    tokens: tf.tensor2d(ids, [b, 6], "int32") as Tensor2D,
    mask: tf.tensor2d(
      ids.map((v) => (v ? 1 : 0)),
      [b, 6],
    ) as Tensor2D,
  };
}

/**
 * Runs the UNet on both runtimes with each conditioning (one ONNX runner for all of them) and compares the full
 * output, eps and variance channels. The ONNX side must leave no tensor behind.
 */
function agree(name: string, unet: UNet, x: Tensor4D, t: Tensor1D, conds: Conditioning[]): void {
  const fn = onnxModelFn(unet, { threads: 1 });
  const tensorsBefore = tf.memory().numTensors;
  try {
    for (const [i, cond] of conds.entries()) {
      const err = tf.tidy(() => {
        const ref = unet.forward(x, t, cond);
        const p = fn(x, t, cond);
        const got = p.varValues ? tf.concat([p.out, p.varValues], 3) : p.out;
        return relErr(got.dataSync(), ref.dataSync());
      });
      errors.push(`${name}#${i} ${err.toExponential(1)}`);
      assert.ok(err <= TOL, `${name} (conditioning ${i}): relative error ${err} > ${TOL}`);
    }
  } finally {
    fn.runner.dispose();
  }
  assert.equal(tf.memory().numTensors, tensorsBefore, `${name}: the ONNX ModelFn leaked tensors`);
}

describe("onnx export of every UNet kind vs tfjs", () => {
  const owned: Tensor[] = [];
  after(() => tf.dispose(owned));
  const keep = <T extends Tensor>(x: T): T => {
    owned.push(x);
    return x;
  };

  test("super-resolution (GLIDE upsampler): 4×4 and 8×8 low-res inputs upsampled to 16×16", (t) => {
    if (skip) return t.skip(skip);
    const { unet, init } = randomUNet(11, { ...base, text, superRes: true });
    try {
      const b = 2;
      const x = keep(init.normal([b, 16, 16, 3], 1) as Tensor4D);
      const ts = keep(tf.tensor1d([3, 870]));
      const small = keep(init.normal([b, 4, 4, 3], 1) as Tensor4D);
      const mid = keep(init.normal([b, 8, 8, 3], 1) as Tensor4D);
      // Two low-res sizes: one session each, keyed by the low-res shape.
      agree("super-res", unet, x, ts, [
        { ...textCond(b), lowRes: small },
        { ...textCond(b), lowRes: mid },
      ]);
    } finally {
      unet.dispose();
    }
  });

  test("inpainting (GLIDE inpaint): with image and mask, and with both absent (zeros)", (t) => {
    if (skip) return t.skip(skip);
    const { unet, init } = randomUNet(12, { ...base, text, inpaint: true });
    try {
      const b = 3;
      const x = keep(init.normal([b, 16, 16, 3], 1) as Tensor4D);
      const ts = keep(tf.tensor1d([0, 500, 999]));
      const image = keep(init.normal([b, 16, 16, 3], 1) as Tensor4D);
      const mask = keep(tf.tidy(() => tf.cast(tf.greater(init.normal([b, 16, 16, 1], 1), 0), "float32")));
      agree("inpaint", unet, x, ts, [
        { ...textCond(b), inpaintImage: image, inpaintMask: mask as Tensor4D },
        textCond(b),
      ]);
    } finally {
      unet.dispose();
    }
  });

  test("super-resolution inpainting (GLIDE's inpaint upsampler): channel order x, image·mask, mask, low-res", (t) => {
    if (skip) return t.skip(skip);
    const { unet, init } = randomUNet(13, { ...base, text, inpaint: true, superRes: true });
    try {
      const b = 2;
      const x = keep(init.normal([b, 16, 16, 3], 1) as Tensor4D);
      const ts = keep(tf.tensor1d([10, 640]));
      const image = keep(init.normal([b, 16, 16, 3], 1) as Tensor4D);
      const mask = keep(tf.tidy(() => tf.cast(tf.greater(init.normal([b, 16, 16, 1], 1), 0), "float32")));
      const low = keep(init.normal([b, 4, 4, 3], 1) as Tensor4D);
      agree("inpaint+super-res", unet, x, ts, [
        { ...textCond(b), inpaintImage: image, inpaintMask: mask as Tensor4D, lowRes: low },
      ]);
    } finally {
      unet.dispose();
    }
  });

  test("class-conditional (guided-diffusion): label embedding, new attention order, heads by channels", (t) => {
    if (skip) return t.skip(skip);
    const { unet, init } = randomUNet(14, {
      ...base,
      numClasses: 10,
      useNewAttentionOrder: true,
      numHeadChannels: 16,
      numHeads: 4,
    });
    try {
      const b = 3;
      const x = keep(init.normal([b, 16, 16, 3], 1) as Tensor4D);
      const ts = keep(tf.tensor1d([1, 250, 998]));
      // Labels as int32 and as float (the verifier and strategies pass either).
      agree("class-cond", unet, x, ts, [
        { y: keep(tf.tensor1d([0, 9, 4], "int32")) },
        { y: keep(tf.tensor1d([3, 3, 7], "float32")) },
      ]);
      const fn = onnxModelFn(unet, { threads: 1 });
      try {
        assert.throws(() => fn(x, ts, {}), /class-conditional: pass class labels/, "missing y is named");
      } finally {
        fn.runner.dispose();
      }
    } finally {
      unet.dispose();
    }
  });

  test("super-resolution without lowRes is an error naming the input", (t) => {
    if (skip) return t.skip(skip);
    const { unet, init } = randomUNet(15, { ...base, superRes: true });
    const fn = onnxModelFn(unet, { threads: 1 });
    const x = init.normal([1, 16, 16, 3], 1) as Tensor4D;
    const ts = tf.tensor1d([5]);
    try {
      assert.throws(() => fn(x, ts, {}), /pass the low-res image `lowRes`/, "missing lowRes is named");
    } finally {
      fn.runner.dispose();
      unet.dispose();
      tf.dispose([x, ts]);
    }
  });
});

describe("onnx export of the noised CLIP's towers vs tfjs", () => {
  const config: ClipConfig = {
    imageSize: 16,
    patchSize: 4,
    nVocab: 40,
    maxTextLen: 9,
    nEmbd: 24,
    nHeadStateText: 8,
    nHeadText: 2,
    nXfBlocksText: 2,
    nHeadStateImage: 8,
    nHeadImage: 3,
    nXfBlocksImage: 2,
    nTimesteps: 1000,
    logitScale: 100,
  };

  test("image embeddings at several timesteps and text embeddings of several lengths agree to 1e-5", (t) => {
    if (skip) return t.skip(skip);
    const init = new Init(21);
    const model = new ClipModel(init, config);
    for (const [, v] of model.namedParameters()) v.assign(tf.mul(init.normal([...v.shape], 1), 0.3));
    const onnx = new OnnxClip(model, { threads: 1 });
    const x = init.normal([3, 16, 16, 3], 0.5) as Tensor4D;
    const ts = tf.tensor1d([0, 417, 999], "int32") as Tensor1D;
    const tokens = tf.tensor2d(
      Array.from({ length: 3 * 9 }, (_, i) => (i * 7) % 40),
      [3, 9],
      "int32",
    ) as Tensor2D;
    const lens = [1, 5, 9];
    const before = tf.memory().numTensors;
    try {
      for (const [name, ref, got] of [
        ["image", () => model.embedImage(x, ts), () => onnx.embedImage(x, ts)],
        ["text", () => model.embedText(tokens, lens), () => onnx.embedText(tokens, lens)],
      ] as const) {
        const err = tf.tidy(() => relErr(got().dataSync(), ref().dataSync()));
        errors.push(`clip ${name} ${err.toExponential(1)}`);
        assert.ok(err <= TOL, `CLIP ${name}: relative error ${err} > ${TOL}`);
      }
      assert.throws(() => onnx.embedText(tokens, [0, 5, 9]), /lengths in 1\.\.9/, "a bad length is an error");
      assert.equal(tf.memory().numTensors, before, "OnnxClip leaves no tensor behind");
    } finally {
      onnx.dispose();
      model.dispose();
      tf.dispose([x, ts, tokens]);
    }
  });
  test("with a convolutional stem (the zoo's option), image embeddings agree to 1e-5", (t) => {
    if (skip) return t.skip(skip);
    const init = new Init(22);
    const model = new ClipModel(init, { ...config, convStem: [5, 4] });
    for (const [, v] of model.namedParameters()) v.assign(tf.mul(init.normal([...v.shape], 1), 0.3));
    const onnx = new OnnxClip(model, { threads: 1 });
    const x = init.normal([2, 16, 16, 3], 0.5) as Tensor4D;
    const ts = tf.tensor1d([3, 700], "int32") as Tensor1D;
    try {
      const err = tf.tidy(() =>
        relErr(onnx.embedImage(x, ts).dataSync(), model.embedImage(x, ts).dataSync()),
      );
      errors.push(`clip image with stem ${err.toExponential(1)}`);
      assert.ok(err <= TOL, `CLIP image with stem: relative error ${err} > ${TOL}`);
    } finally {
      onnx.dispose();
      model.dispose();
      tf.dispose([x, ts]);
    }
  });
});
