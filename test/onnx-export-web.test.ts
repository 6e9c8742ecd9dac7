// The export options the browser explorer uses (src/explore/build.ts): a symbolic batch dimension (one file for
// every batch size) and float16 storage of float16-exact weights. Both must give bitwise the outputs of the
// fixed-batch float32 export on ONNX Runtime: float16 storage bitwise (the Cast is exact), the symbolic batch
// within float32 rounding (ONNX Runtime picks other kernels when a dimension is unknown).
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { tf } from "../src/core/engine.ts";
import { Init } from "../src/core/layers.ts";
import { UNet } from "../src/nets/unet.ts";
import { exportUNet } from "../src/onnx/export.ts";
import { halfBitsExact } from "../src/onnx/graph.ts";
import { relErr, startOnnxTests } from "./helpers/onnx.ts";
import { tinyUNetConfig } from "./helpers/tiny-unet.ts";

let skip: string | undefined;
before(async () => {
  skip = await startOnnxTests();
});

describe("exportUNet for the browser", () => {
  it("halfBitsExact: exact float16 values convert, others do not", () => {
    assert.equal(halfBitsExact(1), 0x3c00);
    assert.equal(halfBitsExact(-2), 0xc000);
    assert.equal(halfBitsExact(65504), 0x7bff);
    assert.equal(halfBitsExact(2 ** -24), 0x0001, "smallest subnormal");
    assert.equal(halfBitsExact(3 * 2 ** -20), 0x0030, "a subnormal");
    assert.equal(halfBitsExact(-0), 0x8000);
    assert.equal(halfBitsExact(0.1), undefined, "0.1 is not a float16");
    assert.equal(halfBitsExact(65536), undefined, "out of range");
    assert.equal(halfBitsExact(2 ** -25), undefined, "below the smallest subnormal");
  });

  it("dynamic batch: the fixed export's outputs to 1e-5; float16 weights: the float32 ones bitwise", async (t) => {
    if (skip) {
      t.skip(skip);
      return;
    }
    const ort = await import("onnxruntime-node");
    const unet = new UNet(new Init(3), tinyUNetConfig({ vocabSize: 20, ctx: 5 }));
    // Weights on a 2^-10 grid in [-1, 1] are float16-exact, as the zoo's float16 files are.
    for (const [, v] of unet.namedParameters())
      v.assign(tf.tidy(() => tf.div(tf.round(tf.mul(tf.clipByValue(v, -1, 1), 1024)), 1024)));
    const run = async (bytes: Uint8Array, b: number) => {
      const s = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, logSeverityLevel: 3 });
      const init = new Init(b);
      const r = await s.run({
        x: new ort.Tensor("float32", init.normal([b, 8, 8, 3], 1).dataSync() as Float32Array, [b, 8, 8, 3]),
        t: new ort.Tensor(
          "float32",
          Float32Array.from({ length: b }, (_, i) => 100 * i + 7),
          [b],
        ),
        tokens: new ort.Tensor(
          "int32",
          Int32Array.from({ length: b * 5 }, (_, i) => i % 20),
          [b, 5],
        ),
        mask: new ort.Tensor(
          "float32",
          Float32Array.from({ length: b * 5 }, (_, i) => (i % 5 < 3 ? 1 : 0)),
          [b, 5],
        ),
      });
      await s.release();
      return r.out!.data as Float32Array;
    };
    const dynamicF32 = exportUNet(unet, { batch: "dynamic" });
    const dynamicF16 = exportUNet(unet, { batch: "dynamic", halfWeights: true });
    assert.ok(
      dynamicF16.length < 0.7 * dynamicF32.length,
      `float16 weights: ${dynamicF16.length} vs ${dynamicF32.length} bytes`,
    );
    for (const b of [1, 3]) {
      const fixed = await run(exportUNet(unet, { batch: b }), b);
      const dyn = await run(dynamicF32, b);
      const err = relErr(dyn, fixed);
      assert.ok(err < 1e-5, `dynamic batch, b = ${b}: ${err.toExponential(2)} relative`);
      assert.deepEqual(await run(dynamicF16, b), dyn, `float16 weights, b = ${b}: bitwise`);
    }
    unet.dispose();
  });
});
