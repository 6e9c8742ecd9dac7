// The traced training step on ONNX Runtime (src/onnx/trace.ts, kernels.ts, src/train/onnx-step.ts): for every model kind
// the zoo trains, the replayed loss and gradients equal TensorFlow.js's; losses that read step-dependent values
// other than their inputs, or kernels without a translation, are refused with errors that say so.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import {
  initEngine,
  type Scalar,
  type Tensor,
  type Tensor1D,
  type Tensor2D,
  type Tensor4D,
  tf,
} from "../src/core/engine.ts";
import { Init, Linear } from "../src/core/layers.ts";
import { conv2d } from "../src/core/ops.ts";
import { onnxUnavailable } from "../src/onnx/runtime.ts";
import { buildStepGraph } from "../src/train/onnx-step.ts";
import { parseRecipe } from "../src/train/recipe.ts";
import { defineTask, floats, type StepInputs, type TaskInstance } from "../src/train/task.ts";
import { buildTask } from "../src/train/tasks.ts";

const TINY_MODELS: Record<string, { task: string; model: Record<string, unknown> }> = {
  denoiser: {
    task: "denoiser",
    model: {
      modelChannels: 32,
      channelMult: [1, 2],
      numResBlocks: 1,
      attentionResolutions: [8],
      xfWidth: 32,
      xfLayers: 1,
      xfHeads: 2,
    },
  },
  classifier: {
    task: "classifier",
    model: { modelChannels: 32, channelMult: [1, 2], numResBlocks: 1, attentionResolutions: [8] },
  },
  "noised-clip (vit)": {
    task: "noised-clip",
    model: { patchSize: 4, embedDim: 16, headState: 8, heads: 2, textBlocks: 1, imageBlocks: 1 },
  },
  "noised-clip (conv)": {
    task: "noised-clip",
    model: { tower: "conv", modelChannels: 32, channelMult: [1, 2], attentionResolutions: [8], embedDim: 16 },
  },
  "eval-clip": {
    task: "eval-clip",
    model: {
      modelChannels: 32,
      channelMult: [1, 2],
      attentionResolutions: [],
      embedDim: 16,
      xfWidth: 16,
      xfLayers: 1,
      xfHeads: 2,
    },
  },
};

async function replay(task: TaskInstance, inputs: StepInputs, check?: StepInputs) {
  const ort = await import("onnxruntime-node");
  const params = task.model.namedParameters();
  const graph = buildStepGraph(task, params, inputs, check);
  const session = await ort.InferenceSession.create(graph.bytes, {
    intraOpNumThreads: 1,
    logSeverityLevel: 3,
  });
  const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {};
  for (const [n, p] of params) {
    feeds[`param:${n}`] = new ort.Tensor("float32", Float32Array.from(p.dataSync()), p.shape);
  }
  for (const [k, v] of Object.entries(inputs)) feeds[`input:${k}`] = new ort.Tensor(v.dtype, v.data, v.shape);
  const out = await session.run(feeds);
  const loss = (out[graph.lossName]!.data as Float32Array)[0]!;
  const grads = graph.gradNames.map((g) => out[g]!.data as Float32Array);
  await session.release();
  return { graph, loss, grads };
}

const why = await onnxUnavailable();

describe("training steps replayed on ONNX Runtime", {
  skip: why && `onnxruntime-node cannot load: ${why}`,
}, () => {
  before(async () => {
    await initEngine("wasm", { quiet: true });
  });

  for (const [label, spec] of Object.entries(TINY_MODELS)) {
    it(`${label}: loss and every gradient equal TensorFlow.js's`, { timeout: 240_000 }, async () => {
      const recipe = parseRecipe(
        { name: "tiny", task: spec.task, steps: 1, model: spec.model, world: { size: 16 } },
        "tiny",
      );
      const task = buildTask(recipe);
      const before = tf.memory().numTensors;
      const { graph, loss, grads } = await replay(task, task.inputs(3, 0, 4), task.inputs(4, 0, 4));
      assert.equal(tf.memory().numTensors, before, "tracing leaves no tensor behind");
      const ref = graph.reference;
      assert.ok(Number.isFinite(ref.loss) && ref.loss > 0, `loss ${ref.loss}`);
      assert.ok(Math.abs(loss - ref.loss) <= 1e-5 * Math.abs(ref.loss), `loss ${loss} vs ${ref.loss}`);
      // Gradients compared on the scale of the largest one: some (biases before a GroupNorm) are zero up to
      // rounding, where a relative error means nothing.
      let scale = 0;
      for (const g of ref.grads) for (const v of g) scale = Math.max(scale, Math.abs(v));
      assert.ok(scale > 0, "some gradient is non-zero");
      graph.params.forEach((name, i) => {
        const a = grads[i]!;
        const r = ref.grads[i]!;
        assert.equal(a.length, r.length, name);
        let worst = 0;
        for (let j = 0; j < a.length; j++) worst = Math.max(worst, Math.abs(a[j]! - r[j]!));
        assert.ok(worst <= 1e-4 * scale, `${name}: max |Δ| ${worst} vs gradient scale ${scale}`);
      });
      task.dispose();
    });
  }

  // Every kernel the translation table knows, each inside a small loss over a parameter so that its gradient
  // kernels are replayed too: values and gradients against TensorFlow.js's.
  const OPS: Record<string, (y: Tensor2D) => Tensor> = {
    "min/max over an axis": (y) => tf.addN([tf.min(y, 0), tf.reshape(tf.max(y, 0, true), [-1])]),
    "unary maths": (y) =>
      tf.addN([
        tf.exp(tf.tanh(y)),
        tf.log(tf.add(tf.abs(y), 1)),
        tf.rsqrt(tf.add(tf.square(y), 1)),
        tf.erf(y),
      ]),
    "more unary": (y) =>
      tf.addN([
        tf.reciprocal(tf.add(tf.sigmoid(y), 1)),
        tf.sqrt(tf.add(tf.relu(y), 1)),
        tf.cos(y),
        tf.sin(y),
      ]),
    "sign, floor, clip, neg": (y) =>
      tf.addN([tf.mul(tf.sign(y), tf.floor(tf.mul(y, 3))), tf.clipByValue(y, -0.2, 0.3), tf.neg(y)]),
    "binary and broadcast": (y) =>
      tf.addN([
        tf.div(y, tf.add(tf.abs(tf.reshape(tf.slice(y, [0, 0], [1, 4]), [4])), 1)),
        tf.maximum(y, 0.1),
        tf.minimum(y, tf.reshape(tf.transpose(tf.reshape(tf.reverse(y, [1]), [4, 2])), [2, 4])),
        tf.pow(tf.add(tf.abs(y), 1), 1.5),
        tf.squaredDifference(y, 0.5),
      ]),
    "comparisons and select": (y) =>
      tf.where(
        tf.logicalOr(tf.logicalAnd(tf.greater(y, -0.5), tf.lessEqual(y, 0.5)), tf.equal(y, 0)),
        tf.mul(y, 2),
        tf.where(tf.logicalNot(tf.less(y, 0)), tf.cast(tf.greaterEqual(y, 1), "float32"), y),
      ),
    "shape ops": (y) => {
      const [a, b] = tf.split(tf.tile(y, [1, 2]), [3, 5], 1);
      return tf.concat(
        [
          tf.pad(a!, [
            [1, 0],
            [0, 2],
          ]),
          tf.reverse(
            tf.pad(b!, [
              [0, 1],
              [0, 0],
            ]),
            [0, 1],
          ),
        ],
        1,
      );
    },
    "softmax, gather, one-hot": (y) =>
      tf.addN([
        tf.softmax(y),
        tf.gather(y, tf.tensor1d([1, 0], "int32"), 0),
        tf.mul(tf.oneHot(tf.tensor1d([3, 1], "int32"), 4), y),
      ]),
    "batch matmul, every transpose": (y) => {
      const a = tf.reshape(y, [2, 2, 2]);
      return tf.addN([
        tf.matMul(a, a),
        tf.matMul(a, a, true),
        tf.matMul(a, a, false, true),
        tf.matMul(a, a, true, true),
      ]);
    },
    "conv (stride 2, same and valid), nearest resize": (y) => {
      const img = tf.reshape(tf.tile(y, [1, 8]), [2, 4, 4, 2]) as Tensor4D;
      const w3 = tf.reshape(tf.tile(y, [1, 9]), [3, 3, 2, 4]) as Tensor4D;
      const w2 = tf.reshape(tf.tile(y, [1, 2]), [2, 2, 2, 2]) as Tensor4D;
      const up = tf.image.resizeNearestNeighbor(conv2d(img, w3, 2, "same"), [4, 4]);
      return tf.add(tf.sum(up), tf.sum(conv2d(img, w2, 2, "valid")));
    },
  };
  for (const [label, op] of Object.entries(OPS)) {
    it(`kernels: ${label}`, async () => {
      const model = new Linear(new Init(3), 3, 4);
      const task = defineTask(model, {
        inputs: () => ({ x: floats(new Float32Array([0.3, -1.2, 0.8, 1.5, 0.1, -0.4]), [2, 3]) }),
        lossOf: (x) => {
          const y = model.forward(x.x as never) as Tensor2D;
          const r = op(y);
          return tf.sum(tf.mul(r, tf.sin(tf.add(tf.reshape(tf.range(0, r.size), r.shape), 1)))) as Scalar;
        },
      });
      const { graph, loss, grads } = await replay(task, task.inputs(0, 0, 2));
      const ref = graph.reference;
      assert.ok(
        Math.abs(loss - ref.loss) <= 1e-5 * Math.max(1, Math.abs(ref.loss)),
        `loss ${loss} vs ${ref.loss}`,
      );
      graph.params.forEach((name, i) => {
        let worst = 0;
        let scale = 0;
        for (let j = 0; j < grads[i]!.length; j++) {
          worst = Math.max(worst, Math.abs(grads[i]![j]! - ref.grads[i]![j]!));
          scale = Math.max(scale, Math.abs(ref.grads[i]![j]!));
        }
        assert.ok(worst <= 1e-4 * Math.max(1, scale), `${name}: max |Δ| ${worst} (scale ${scale})`);
      });
      model.dispose();
    });
  }

  it("refuses a loss that reads a step-dependent value besides its inputs", async () => {
    const init = new Init(0);
    const model = new Linear(init, 3, 1);
    let calls = 0;
    const task = defineTask(model, {
      inputs: () => ({ x: floats(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]) }),
      lossOf: (x) => {
        calls += 1;
        // A hidden per-call value: replaying the first trace would be wrong from the second step on.
        const hidden = tf.scalar(calls);
        return tf.mean(tf.mul(model.forward(x.x as never), hidden)) as Scalar;
      },
    });
    const inputs = task.inputs(0, 0, 2);
    assert.throws(
      () => buildStepGraph(task, model.namedParameters(), inputs, task.inputs(1, 0, 2)),
      /not replayable.*constant whose values changed/,
    );
    model.dispose();
  });

  it("refuses a loss that freezes a parameter's value into a constant", () => {
    const model = new Linear(new Init(0), 3, 1);
    const task = defineTask(model, {
      inputs: () => ({ x: floats(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]) }),
      // Read back to JS: the replay would keep the traced value forever.
      lossOf: (x) =>
        tf.mean(tf.mul(model.forward(x.x as never), tf.scalar(model.weight.dataSync()[0]!))) as Scalar,
    });
    assert.throws(
      () => buildStepGraph(task, model.namedParameters(), task.inputs(0, 0, 2), task.inputs(1, 0, 2)),
      /not replayable/,
    );
    model.dispose();
  });

  it("names a kernel it cannot translate", () => {
    const model = new Linear(new Init(0), 3, 1);
    const task = defineTask(model, {
      inputs: () => ({ x: floats(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]) }),
      lossOf: (x) => tf.sum(tf.cumsum(model.forward(x.x as never) as Tensor1D)) as Scalar,
    });
    assert.throws(() => buildStepGraph(task, model.namedParameters(), task.inputs(0, 0, 2)), /'Cumsum'/);
    model.dispose();
  });
});
