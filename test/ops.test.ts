import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import type { Tensor, Tensor2D, Tensor4D } from "../src/core/engine.ts";
import { initEngine, tf } from "../src/core/engine.ts";
import { Init } from "../src/core/layers.ts";
import type { ConvPad } from "../src/core/ops.ts";
import * as ops from "../src/core/ops.ts";

const BACKENDS = ["wasm", "cpu"] as const;

before(async () => {
  await initEngine("wasm", { quiet: true });
});

/**
 * Central-difference check of every input's directional derivative of L = sum(f(xs) · R). Returns the worst
 * relative error; float32 with eps 1e-2 on O(1) data keeps both rounding and truncation error well below 1e-2.
 */
export function gradCheck(f: (...xs: Tensor[]) => Tensor, inputs: Tensor[], seed = 7, eps = 1e-2): number {
  const init = new Init(seed);
  return tf.tidy(() => {
    const out = f(...inputs);
    const r = init.normal(out.shape, 1);
    const loss = (...xs: Tensor[]) => tf.sum(tf.mul(f(...xs), r));
    const grads = tf.grads(loss)(inputs);
    let worst = 0;
    inputs.forEach((x, i) => {
      if (x.dtype !== "float32") return;
      const v = init.normal(x.shape, 1);
      const analytic = tf.sum(tf.mul(grads[i]!, v)).dataSync()[0]!;
      const at = (s: number) =>
        loss(...inputs.map((y, j) => (j === i ? tf.add(y, tf.mul(v, s)) : y))).dataSync()[0]!;
      const numeric = (at(eps) - at(-eps)) / (2 * eps);
      const err = Math.abs(analytic - numeric) / Math.max(1, Math.abs(numeric));
      worst = Math.max(worst, err);
    });
    return worst;
  });
}

function maxAbsDiff(a: Tensor, b: Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
}

/** Direct loops; the padding convention (TF "same": extra pixel bottom/right) is the thing under test. */
function refConv(
  x: Tensor4D,
  w: Tensor4D,
  stride: number,
  pad: ConvPad,
): { data: Float32Array; shape: number[] } {
  const [b, h, wd, ci] = x.shape;
  const [k, , , co] = w.shape;
  const p = ops.resolvePads(h, wd, k, stride, pad);
  const ho = ops.convOutSize(h, k, stride, p.top, p.bottom);
  const wo = ops.convOutSize(wd, k, stride, p.left, p.right);
  const xv = x.dataSync();
  const wv = w.dataSync();
  const out = new Float32Array(b * ho * wo * co);
  for (let n = 0; n < b; n++)
    for (let i = 0; i < ho; i++)
      for (let j = 0; j < wo; j++)
        for (let o = 0; o < co; o++) {
          let acc = 0;
          for (let di = 0; di < k; di++)
            for (let dj = 0; dj < k; dj++) {
              const yi = i * stride + di - p.top;
              const xj = j * stride + dj - p.left;
              if (yi < 0 || yi >= h || xj < 0 || xj >= wd) continue;
              for (let c = 0; c < ci; c++) {
                acc += xv[((n * h + yi) * wd + xj) * ci + c]! * wv[((di * k + dj) * ci + c) * co + o]!;
              }
            }
          out[((n * ho + i) * wo + j) * co + o] = acc;
        }
  return { data: out, shape: [b, ho, wo, co] };
}

const CONV_CASES: { x: number[]; k: number; co: number; s: number; pad: ConvPad }[] = [
  { x: [2, 5, 6, 3], k: 3, co: 4, s: 1, pad: "same" },
  { x: [2, 7, 6, 3], k: 3, co: 4, s: 2, pad: "same" },
  { x: [1, 8, 8, 2], k: 3, co: 3, s: 2, pad: "same" },
  { x: [2, 7, 9, 3], k: 3, co: 2, s: 1, pad: "valid" },
  { x: [1, 7, 9, 2], k: 3, co: 3, s: 2, pad: "valid" },
  { x: [1, 7, 5, 2], k: 3, co: 3, s: 2, pad: 1 },
  { x: [1, 9, 9, 2], k: 5, co: 2, s: 2, pad: 2 },
  { x: [1, 5, 5, 2], k: 3, co: 2, s: 1, pad: 4 },
  { x: [2, 5, 4, 3], k: 1, co: 4, s: 1, pad: "same" },
  { x: [1, 9, 8, 2], k: 4, co: 3, s: 3, pad: "same" },
];

for (const backend of BACKENDS) {
  describe(`ops on ${backend}`, () => {
    before(async () => {
      await tf.setBackend(backend);
    });

    test("conv2d forward matches a direct loop (same/valid/explicit pads, strides 1-3)", () => {
      const init = new Init(1);
      for (const c of CONV_CASES) {
        tf.tidy(() => {
          const x = init.normal(c.x, 1) as Tensor4D;
          const w = init.normal([c.k, c.k, c.x[3]!, c.co], 1) as Tensor4D;
          const y = ops.conv2d(x, w, c.s, c.pad);
          const ref = refConv(x, w, c.s, c.pad);
          assert.deepEqual(y.shape, ref.shape, JSON.stringify(c));
          assert.ok(maxAbsDiff(y, tf.tensor(ref.data, ref.shape)) < 1e-4, JSON.stringify(c));
        });
      }
    });

    test("conv2d gradients pass finite differences and equal tf's own kernels", () => {
      const init = new Init(2);
      for (const c of CONV_CASES) {
        tf.tidy(() => {
          const x = init.normal(c.x, 1) as Tensor4D;
          const w = init.normal([c.k, c.k, c.x[3]!, c.co], 0.5) as Tensor4D;
          const f = (a: Tensor, b: Tensor) => ops.conv2d(a as Tensor4D, b as Tensor4D, c.s, c.pad);
          assert.ok(gradCheck(f, [x, w]) < 1e-2, `finite differences ${JSON.stringify(c)}`);
          const fc = (a: Tensor, b: Tensor) => ops.conv2dCustomGrad(a as Tensor4D, b as Tensor4D, c.s, c.pad);
          assert.ok(gradCheck(fc, [x, w]) < 1e-2, `customGrad path ${JSON.stringify(c)}`);
          const dy = init.normal(f(x, w).shape, 1);
          const p = ops.resolvePads(c.x[1]!, c.x[2]!, c.k, c.s, c.pad);
          const [gx, gw] = tf.grads(f)([x, w], dy);
          // tf's own kernels as the reference: Conv2DBackpropInput exists on both, Filter only on cpu.
          assert.ok(maxAbsDiff(gx!, ops.nativeConvGrad("x", dy as Tensor4D, x, w, c.s, p)) < 1e-4);
          assert.ok(maxAbsDiff(ops.convInputGrad(dy as Tensor4D, w, x.shape, c.s, p), gx!) < 1e-4);
          if (backend === "cpu") {
            assert.ok(maxAbsDiff(gw!, ops.nativeConvGrad("w", dy as Tensor4D, x, w, c.s, p)) < 1e-4);
          }
          const [cx, cw] = tf.grads(fc)([x, w], dy);
          assert.ok(maxAbsDiff(cx!, gx!) < 1e-4 && maxAbsDiff(cw!, gw!) < 1e-4, "both paths agree");
        });
      }
    });

    test("plain tf.conv2d is differentiable too (registered Conv2D gradient)", () => {
      const init = new Init(3);
      tf.tidy(() => {
        const x = init.normal([1, 6, 5, 2], 1);
        const w = init.normal([3, 3, 2, 3], 1);
        const f = (a: Tensor, b: Tensor) => tf.conv2d(a as Tensor4D, b as Tensor4D, 2, "same");
        assert.ok(gradCheck(f, [x, w]) < 1e-2);
      });
    });

    test("embedding: lookup, and gradient summing repeated ids", () => {
      tf.tidy(() => {
        const table = new Init(4).normal([5, 3], 1) as Tensor2D;
        const ids = tf.tensor2d(
          [
            [1, 3, 1],
            [4, 1, 0],
          ],
          [2, 3],
          "int32",
        );
        const y = ops.embedding(table, ids);
        assert.deepEqual(y.shape, [2, 3, 3]);
        const rows = table.arraySync();
        assert.deepEqual((y.arraySync() as number[][][])[1]![0], rows[4]);
        const [g] = tf.grads((t: Tensor) => tf.sum(ops.embedding(t as Tensor2D, ids)))([table]);
        assert.deepEqual(
          tf.slice(g!, [0, 0], [5, 1]).dataSync().slice(),
          new Float32Array([1, 3, 0, 1, 1]),
          "row grads count occurrences",
        );
        assert.ok(gradCheck((t) => ops.embedding(t as Tensor2D, ids), [table]) < 1e-2);
        // float ids are accepted and cast
        assert.deepEqual(ops.embedding(table, tf.tensor1d([2, 2])).shape, [2, 3]);
      });
    });

    test("tf.gather gradient (registered, no UnsortedSegmentSum) on a middle axis with repeats", () => {
      tf.tidy(() => {
        const x = new Init(5).normal([2, 4, 3], 1);
        const idx = tf.tensor1d([3, 0, 3, 3], "int32");
        assert.ok(gradCheck((a) => tf.gather(a, idx, 1), [x]) < 1e-2);
      });
    });

    test("gelu is exact (erf) and its gradient matches finite differences", () => {
      tf.tidy(() => {
        const xs = [-3, -1, -0.5, 0, 0.3, 1, 2.5];
        const y = ops.gelu(tf.tensor1d(xs)).dataSync();
        // Φ via a high-accuracy erf series (|x|/√2 < 2.2 here), independent of tf.erf's approximation.
        const erf = (z: number) => {
          let sum = 0;
          let term = z;
          for (let n = 0; n < 60; n++) {
            sum += term / (2 * n + 1);
            term *= (-z * z) / (n + 1);
          }
          return (2 / Math.sqrt(Math.PI)) * sum;
        };
        xs.forEach((x, i) => {
          assert.ok(Math.abs(y[i]! - 0.5 * x * (1 + erf(x / Math.SQRT2))) < 1e-5, `gelu(${x})`);
        });
        assert.ok(gradCheck((a) => ops.gelu(a), [new Init(6).normal([4, 5], 1.5)]) < 1e-2);
      });
    });

    test("silu, upsampleNearest2x, avgPool2x: values and gradients", () => {
      tf.tidy(() => {
        const x = tf.tensor4d([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 2, 2]);
        assert.deepEqual(
          Array.from(ops.upsampleNearest2x(x).dataSync()),
          [1, 2, 1, 2, 3, 4, 3, 4, 1, 2, 1, 2, 3, 4, 3, 4, 5, 6, 5, 6, 7, 8, 7, 8, 5, 6, 5, 6, 7, 8, 7, 8],
        );
        assert.deepEqual(Array.from(ops.avgPool2x(x).dataSync()), [4, 5]);
        const odd = new Init(7).normal([2, 5, 3, 2], 1) as Tensor4D;
        assert.deepEqual(ops.avgPool2x(odd).shape, [2, 2, 1, 2]);
        const ref = tf.avgPool(tf.slice(odd, [0, 0, 0, 0], [2, 4, 2, 2]), 2, 2, "valid");
        assert.ok(maxAbsDiff(ops.avgPool2x(odd), ref) < 1e-6);
        assert.ok(Math.abs(ops.silu(tf.scalar(1)).dataSync()[0]! - 1 / (1 + Math.exp(-1))) < 1e-6);
        assert.ok(gradCheck((a) => ops.upsampleNearest2x(a as Tensor4D), [odd]) < 1e-2);
        assert.ok(gradCheck((a) => ops.avgPool2x(a as Tensor4D), [odd]) < 1e-2);
        assert.ok(gradCheck((a) => ops.silu(a), [odd]) < 1e-2);
      });
    });

    test("registered gradients of the stock kernels pass finite differences", () => {
      const init = new Init(8);
      const a = init.normal([2, 3, 4], 1);
      const b = init.normal([3, 1], 1);
      const pos = tf.add(tf.abs(init.normal([2, 3, 4], 1)), 0.5);
      const m = init.normal([1, 1, 4, 3], 1);
      const n = init.normal([3, 3, 5], 1);
      const img = init.normal([1, 4, 6, 2], 1) as Tensor4D;
      const cases: [string, (...xs: Tensor[]) => Tensor, Tensor[]][] = [
        [
          "add/sub/mul/div broadcast",
          (x, y) => tf.div(tf.mul(tf.sub(tf.add(x, y), y), y), tf.add(tf.abs(y), 1)),
          [a, b],
        ],
        ["squaredDifference/moments", (x) => tf.moments(x, [1, 2], true).variance, [a]],
        [
          "mean/sum/max/min",
          (x) => tf.add(tf.add(tf.mean(x, 1, true), tf.sum(x, 2, true)), tf.add(tf.max(x, 0), tf.min(x, 0))),
          [a],
        ],
        ["softmax/logSoftmax", (x) => tf.add(tf.softmax(x), tf.logSoftmax(x)), [a]],
        [
          "exp/log/sqrt/rsqrt/pow",
          (x) => tf.add(tf.add(tf.log(x), tf.sqrt(x)), tf.add(tf.rsqrt(x), tf.pow(x, 1.5))),
          [pos],
        ],
        ["pow both args", (x, y) => tf.pow(x, y), [pos, tf.sub(tf.abs(b), 0.5)]],
        [
          "tanh/sigmoid/erf/sin/cos/softplus",
          (x) => tf.addN([tf.tanh(x), tf.sigmoid(x), tf.erf(x), tf.sin(x), tf.cos(x), tf.softplus(x)]),
          [a],
        ],
        [
          "square/neg/reciprocal/expm1/log1p",
          (x) => tf.addN([tf.square(x), tf.neg(x), tf.reciprocal(x), tf.expm1(x), tf.log1p(x)]),
          [pos],
        ],
        [
          "maximum/minimum/where/clip",
          (x, y) =>
            tf.add(
              tf.maximum(x, y),
              tf.where(tf.greater(x, 0), tf.minimum(x, y), tf.clipByValue(x, -0.5, 0.5)),
            ),
          [a, init.normal([2, 3, 4], 1)],
        ],
        ["relu/leakyRelu/elu", (x) => tf.addN([tf.relu(x), tf.leakyRelu(x, 0.1), tf.elu(x)]), [a]],
        [
          "batched matMul, broadcast batch, transposes",
          (x, y) => tf.matMul(x, y, true, true),
          [m, init.normal([2, 5, 3, 4], 1)],
        ],
        ["matMul 2-D", (x, y) => tf.matMul(x, y), [init.normal([3, 4], 1), init.normal([4, 2], 1)]],
        [
          "matMul transposeA",
          (x, y) => tf.matMul(x, y, true, false),
          [init.normal([2, 4, 3], 1), init.normal([2, 4, 2], 1)],
        ],
        [
          "matMul transposeB",
          (x, y) => tf.matMul(x, y, false, true),
          [init.normal([2, 3, 4], 1), init.normal([1, 2, 4], 1)],
        ],
        [
          "transpose/reverse/reshape/expandDims",
          (x) => tf.expandDims(tf.reshape(tf.reverse(tf.transpose(x, [2, 0, 1]), [0, 2]), [4, 6]), 1),
          [a],
        ],
        [
          "slice/pad/concat/stack/unstack/split",
          (x) =>
            tf.concat(
              [
                tf.pad(tf.slice(x, [0, 1, 0], [2, 2, 3]), [
                  [0, 0],
                  [1, 0],
                  [0, 1],
                ]),
                tf.stack(tf.unstack(x, 1), 1),
                ...tf.split(x, [1, 3], 2),
              ],
              2,
            ),
          [a],
        ],
        [
          "tile rank 5 / broadcastTo",
          (x) =>
            tf.add(
              tf.tile(tf.reshape(x, [1, 2, 3, 4, 1]), [2, 1, 1, 1, 3]),
              tf.broadcastTo(tf.reshape(x, [1, 2, 3, 4, 1]), [2, 2, 3, 4, 3]),
            ),
          [a],
        ],
        ["cumsum/cast", (x) => tf.add(tf.cumsum(x, 2), tf.cast(x, "float32")), [a]],
        [
          "avgPool/maxPool/resize nearest+bilinear",
          (x) =>
            tf.addN([
              tf.avgPool(x as Tensor4D, 2, 2, "same"),
              tf.maxPool(x as Tensor4D, 2, 2, "same"),
              tf.image.resizeNearestNeighbor(x as Tensor4D, [2, 3]),
              tf.image.resizeBilinear(x as Tensor4D, [2, 3]),
            ]),
          [img],
        ],
        ["abs/3-D matMul", (x) => tf.abs(tf.matMul(x, x, false, true)), [n]],
      ];
      for (const [name, f, xs] of cases) assert.ok(gradCheck(f, xs) < 1e-2, name);
      tf.dispose([a, b, pos, m, n, img]);
    });

    test("ops leak no tensors through forward and gradient", () => {
      const init = new Init(9);
      const x = init.normal([1, 6, 6, 2], 1) as Tensor4D;
      const w = init.normal([3, 3, 2, 3], 1) as Tensor4D;
      const table = init.normal([4, 2], 1) as Tensor2D;
      const ids = tf.tensor1d([0, 3, 3], "int32");
      const before = tf.memory().numTensors;
      tf.tidy(() => {
        ops.conv2d(x, w, 2, "same");
        tf.grads((a: Tensor, b: Tensor) => tf.sum(ops.gelu(ops.conv2d(a as Tensor4D, b as Tensor4D, 2, 1))))([
          x,
          w,
        ]);
        tf.grads((t: Tensor) => tf.sum(ops.embedding(t as Tensor2D, ids)))([table]);
        tf.grads((a: Tensor) => tf.sum(ops.avgPool2x(ops.upsampleNearest2x(a as Tensor4D))))([x]);
      });
      assert.equal(tf.memory().numTensors, before);
      tf.dispose([x, w, table, ids]);
    });
  });
}

test("conv grad mode switch: native everywhere on cpu gives the same gradients", async () => {
  await tf.setBackend("cpu");
  const init = new Init(10);
  tf.tidy(() => {
    const x = init.normal([1, 5, 5, 2], 1);
    const w = init.normal([3, 3, 2, 2], 1);
    const f = (a: Tensor, b: Tensor) => ops.conv2dCustomGrad(a as Tensor4D, b as Tensor4D, 2, "same");
    const custom = (() => {
      ops.setConvGradMode("custom");
      return tf.grads(f)([x, w]);
    })();
    ops.setConvGradMode("native");
    const native = tf.grads(f)([x, w]);
    ops.setConvGradMode("auto");
    assert.ok(maxAbsDiff(custom[0]!, native[0]!) < 1e-4);
    assert.ok(maxAbsDiff(custom[1]!, native[1]!) < 1e-4);
  });
});

test("the gradient registry is registered by initEngine, not by importing the ops or the layers", () => {
  // A fresh process: importing every module that used to register gradients on import must leave tfjs-core with
  // none of ours; initEngine must then register them (Conv2D's and GatherV2's among them).
  const script = `
    const { tf, initEngine } = await import("./src/core/engine.ts");
    await import("./src/core/layers.ts");
    await import("./src/pipelines/sampling.ts");
    const before = ["Conv2D", "GatherV2", "Softmax"].filter((k) => tf.getGradient(k));
    await initEngine("cpu", { quiet: true });
    const after = ["Conv2D", "GatherV2", "Softmax"].filter((k) => tf.getGradient(k));
    process.stdout.write(JSON.stringify({ before, after }));`;
  const out = execFileSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    cwd: join(import.meta.dirname, ".."),
    encoding: "utf8",
  });
  assert.deepEqual(JSON.parse(out), { before: [], after: ["Conv2D", "GatherV2", "Softmax"] });
});
