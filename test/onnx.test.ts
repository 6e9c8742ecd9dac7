import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Tensor, Tensor1D, Tensor2D, Tensor4D } from "../src/core/engine.ts";
import { tf } from "../src/core/engine.ts";
import {
  attention,
  avgPool2x,
  Conv2d,
  Embedding,
  GroupNorm,
  gelu,
  Init,
  LayerNorm,
  Linear,
  silu,
  timestepEmbedding,
  upsampleNearest2x,
} from "../src/core/layers.ts";
import { npyToFloat32, readNpy } from "../src/core/npy.ts";
import { defaultGoldenDir } from "../src/core/paths.ts";
import { loadOfficial } from "../src/nets/convert.ts";
import { defaultChannelMult, UNet, type UNetConfig } from "../src/nets/unet.ts";
import * as E from "../src/onnx/emit.ts";
import { timestepFreqs } from "../src/onnx/export.ts";
import { type DTypeName, Graph } from "../src/onnx/graph.ts";
import { onnxModelFn, providersFromEnv } from "../src/onnx/runtime.ts";
import { exportTextConfig, exportUNetConfig, relErr, startOnnxTests } from "./helpers/onnx.ts";

const TOL = 1e-5;
const errors: string[] = [];
let skip: string | undefined;

before(async () => {
  skip = await startOnnxTests();
});

/** Runs a graph with one input per tensor (named in0, in1, ...) whose body `build` returns the output name. */
async function runGraph(
  inputs: Tensor[],
  outShape: number[],
  build: (g: Graph, ins: string[]) => string,
): Promise<Float32Array> {
  const ort = await import("onnxruntime-node");
  const g = new Graph();
  const names = inputs.map((t, i) =>
    g.input(`in${i}`, (t.dtype === "int32" ? "int32" : "float") as DTypeName, [...t.shape]),
  );
  g.identity(build(g, names), "out");
  g.output("out", "float", outShape);
  const s = await ort.InferenceSession.create(g.serialize(), { intraOpNumThreads: 1, logSeverityLevel: 3 });
  const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {};
  inputs.forEach((t, i) => {
    feeds[`in${i}`] =
      t.dtype === "int32"
        ? new ort.Tensor("int32", Int32Array.from(t.dataSync()), [...t.shape])
        : new ort.Tensor("float32", Float32Array.from(t.dataSync()), [...t.shape]);
  });
  const res = await s.run(feeds);
  await s.release();
  return res.out!.data as Float32Array;
}

const rnd = (init: Init, shape: number[]) => init.normal(shape, 1);
const nchw = (x: Tensor4D) => tf.transpose(x, [0, 3, 1, 2]);

async function check(
  name: string,
  ref: Tensor,
  inputs: Tensor[],
  build: (g: Graph, ins: string[]) => string,
) {
  const got = await runGraph(inputs, [...ref.shape], build);
  const err = relErr(got, ref.dataSync());
  assert.ok(err <= TOL, `${name}: relative error ${err} > ${TOL}`);
  errors.push(`${name} ${err.toExponential(1)}`);
  return err;
}

describe("onnx emitters vs tfjs", () => {
  after(() => console.log(`# emitter max relative errors: ${errors.join(", ")}`));
  const init = new Init(7);
  test("conv 3x3 / 1x1 / stride 2 (NCHW graph, NHWC boundary)", async (t) => {
    if (skip) return t.skip(skip);
    const x = rnd(init, [2, 9, 8, 5]) as Tensor4D;
    for (const [k, stride, padding] of [
      [3, 1, 1],
      [1, 1, "same"],
      [3, 2, "same"],
    ] as const) {
      const conv = new Conv2d(init, 5, 7, k, { stride, padding });
      conv.bias!.assign(rnd(init, [7]) as Tensor1D);
      await check(`conv k${k} s${stride}`, conv.forward(x), [x], (g, [a]) =>
        E.toNHWC(g, E.conv2d(g, conv, E.toNCHW(g, a!), 9, 8)),
      );
    }
  });
  test("linear, layer norm, gelu, silu, embedding", async (t) => {
    if (skip) return t.skip(skip);
    const x = rnd(init, [2, 3, 6]);
    const lin = new Linear(init, 6, 4);
    lin.bias!.assign(rnd(init, [4]) as Tensor1D);
    await check("linear", lin.forward(x), [x], (g, [a]) => E.linear(g, lin, a!));
    const ln = new LayerNorm(6);
    ln.weight.assign(rnd(init, [6]) as Tensor1D);
    await check("layerNorm", ln.forward(x), [x], (g, [a]) => E.layerNorm(g, ln, a!));
    await check("gelu", gelu(x), [x], (g, [a]) => E.gelu(g, a!));
    await check("silu", silu(x), [x], (g, [a]) => E.silu(g, a!));
    const emb = new Embedding(init, 11, 5);
    const ids = tf.tensor2d([1, 0, 10, 3, 3, 7], [2, 3], "int32");
    await check("embedding", emb.forward(ids), [ids], (g, [a]) =>
      E.embedding(g, g.tensor("table", emb.weight), a!),
    );
  });
  test("group norm (NCHW), up/down sampling", async (t) => {
    if (skip) return t.skip(skip);
    const x = rnd(init, [2, 6, 4, 64]) as Tensor4D;
    const gn = new GroupNorm(32, 64);
    gn.weight.assign(rnd(init, [64]) as Tensor1D);
    gn.bias.assign(rnd(init, [64]) as Tensor1D);
    await check("groupNorm NCHW", gn.forward(x), [nchw(x)], (g, [a]) =>
      E.toNHWC(g, E.groupNorm(g, gn, a!, [2, 64, 6, 4])),
    );
    await check("upsample", upsampleNearest2x(x), [nchw(x)], (g, [a]) => E.toNHWC(g, E.upsample2x(g, a!)));
    const odd = rnd(init, [1, 5, 7, 3]) as Tensor4D;
    await check("avgPool", avgPool2x(odd), [nchw(odd)], (g, [a]) => E.toNHWC(g, E.avgPool2x(g, a!)));
  });
  test("timestep embedding and attention", async (t) => {
    if (skip) return t.skip(skip);
    const ts = tf.tensor1d([0, 1, 250.5, 999]);
    await check("timestep", timestepEmbedding(ts, 32), [ts], (g, [a]) =>
      E.timestepEmbedding(g, a!, timestepFreqs(32)),
    );
    const q = rnd(init, [2, 3, 5, 8]) as Tensor4D;
    const k = rnd(init, [2, 3, 7, 8]) as Tensor4D;
    const v = rnd(init, [2, 3, 7, 8]) as Tensor4D;
    const ref = attention(q, k, v);
    await check("attention rows", ref, [q, k, v], (g, [a, b, c]) => E.attentionRows(g, a!, b!, c!, 8));
    const cols = (x: Tensor4D) => tf.transpose(x, [0, 1, 3, 2]);
    await check("attention cols", ref, [cols(q), cols(k), cols(v)], (g, [a, b, c]) =>
      E.transpose(g, E.attentionCols(g, a!, b!, c!, 8), [0, 1, 3, 2]),
    );
  });
});

describe("onnx UNet export", () => {
  let fn: ReturnType<typeof onnxModelFn> | undefined;
  after(() => fn?.runner.dispose());
  const config = (newOrder: boolean, scaleShift: boolean): UNetConfig =>
    exportUNetConfig({
      useScaleShiftNorm: scaleShift,
      useNewAttentionOrder: newOrder,
      text: exportTextConfig(),
    });
  for (const [newOrder, scaleShift] of [
    [false, true],
    [true, false],
  ] as const) {
    test(`tiny text UNet agrees with tfjs (newOrder=${newOrder}, scaleShift=${scaleShift})`, async (t) => {
      if (skip) return t.skip(skip);
      const init = new Init(3);
      const unet = new UNet(init, config(newOrder, scaleShift));
      // Random (non-zero) values for every parameter, so zero-initialised biases/outputs are exercised too.
      for (const [, v] of unet.namedParameters()) v.assign(tf.mul(init.normal([...v.shape], 1), 0.2));
      const b = 3;
      const x = rnd(init, [b, 16, 16, 3]) as Tensor4D;
      const ts = tf.tensor1d([0, 400, 999]);
      const tokens = tf.tensor2d([1, 2, 3, 0, 0, 0, 4, 5, 6, 7, 8, 9, 0, 0, 0, 0, 0, 0], [b, 6], "int32");
      const mask = tf.tensor2d([1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0], [b, 6]);
      const ref = unet.forward(x, ts, { tokens, mask });
      fn?.runner.dispose();
      fn = onnxModelFn(unet, { threads: 1 });
      const pred = fn(x, ts, { tokens, mask });
      const got = tf.concat([pred.out, pred.varValues!], 3);
      const err = relErr(got.dataSync(), ref.dataSync());
      assert.ok(err <= TOL, `UNet: relative error ${err} > ${TOL}`);
      // The cached session is reused for the same batch size.
      const again = fn(x, ts, { tokens, mask });
      assert.ok(
        relErr(again.out.dataSync(), pred.out.dataSync()) === 0,
        "second call differs from the first",
      );
      t.diagnostic(`max relative error ${err.toExponential(2)}`);
      // A runtime error in the worker comes back as an exception, not a hang.
      const short = tf.slice(tokens, [0, 0], [b, 5]) as Tensor2D;
      assert.throws(() => fn!(x, ts, { tokens: short, mask }), /onnxruntime/, "bad feed did not throw");
    });
  }
  test("tiny unconditional UNet (no text encoder), batch 2, non-square 16x8", async (t) => {
    if (skip) return t.skip(skip);
    const init = new Init(4);
    const unet = new UNet(init, { ...config(true, true), text: undefined, outChannels: 3 });
    for (const [, v] of unet.namedParameters()) v.assign(tf.mul(init.normal([...v.shape], 1), 0.2));
    const x = rnd(init, [2, 16, 8, 3]) as Tensor4D;
    const ts = tf.tensor1d([10, 500]);
    const ref = unet.forward(x, ts);
    const f = onnxModelFn(unet, { threads: 1 });
    try {
      const pred = f(x, ts, {});
      assert.ok(pred.varValues === undefined, "no variance channels expected");
      const err = relErr(pred.out.dataSync(), ref.dataSync());
      t.diagnostic(`max relative error ${err.toExponential(2)}`);
      assert.ok(err <= TOL, `unconditional UNet: relative error ${err} > ${TOL}`);
    } finally {
      f.runner.dispose();
    }
  });
  test("channel_mult [0.5, 1]: the input conv and output head are int(0.5·mc) wide in the graph too", async (t) => {
    if (skip) return t.skip(skip);
    const init = new Init(5);
    const unet = new UNet(
      init,
      exportUNetConfig({ modelChannels: 64, channelMult: [0.5, 1], outChannels: 3 }),
    );
    for (const [, v] of unet.namedParameters()) v.assign(tf.mul(init.normal([...v.shape], 1), 0.2));
    const x = rnd(init, [1, 16, 16, 3]) as Tensor4D;
    const ts = tf.tensor1d([250]);
    const ref = unet.forward(x, ts);
    const f = onnxModelFn(unet, { threads: 1 });
    try {
      const err = relErr(f(x, ts, {}).out.dataSync(), ref.dataSync());
      t.diagnostic(`max relative error ${err.toExponential(2)}`);
      assert.ok(err <= TOL, `channel_mult [0.5, 1] UNet: relative error ${err} > ${TOL}`);
    } finally {
      f.runner.dispose();
    }
  });
});

describe("onnx execution providers", () => {
  test("GUIDANCE_LAB_ONNX_PROVIDERS: parsed in order, unknown names rejected by name", () => {
    assert.deepEqual(providersFromEnv(undefined), ["cpu"], "default");
    assert.deepEqual(providersFromEnv(" CUDA, cpu "), ["cuda", "cpu"], "order and case");
    assert.throws(
      () => providersFromEnv("gpu,cpu"),
      /GUIDANCE_LAB_ONNX_PROVIDERS=gpu,cpu: unknown execution provider 'gpu'/,
    );
  });

  test("a CUDA session either runs or fails saying what CUDA needs", async (t) => {
    if (skip) return t.skip(skip);
    const init = new Init(4);
    const unet = new UNet(init, exportUNetConfig({ outChannels: 3 }));
    const x = rnd(init, [1, 16, 16, 3]) as Tensor4D;
    const ts = tf.tensor1d([10]);
    const f = onnxModelFn(unet, { threads: 1, providers: ["cuda", "cpu"] });
    try {
      const pred = f(x, ts, {});
      t.diagnostic("the CUDA provider loaded here");
      assert.equal(pred.out.shape.join(), "1,16,16,3", "output shape");
    } catch (e) {
      assert.match((e as Error).message, /onnxruntime-node-install=cuda12/, "the error says how to get CUDA");
    } finally {
      f.runner.dispose();
      tf.dispose([x, ts]);
      unet.dispose();
    }
  });
});

const GOLDEN = defaultGoldenDir();
const goldenSkip =
  existsSync(join(GOLDEN, "manifest.json")) && existsSync(join(GOLDEN, "glide_fwd"))
    ? false
    : `golden reference not found at ${GOLDEN}`;

describe("onnx GLIDE small vs the official PyTorch output", { skip: goldenSkip }, () => {
  test("official weights, golden inputs", async (t) => {
    if (skip) return t.skip(skip);
    const m = JSON.parse(readFileSync(join(GOLDEN, "manifest.json"), "utf8")).meta.small_glide;
    const size = m.image_size as number;
    const cfg: UNetConfig = {
      imageSize: size,
      inChannels: 3,
      modelChannels: m.num_channels,
      outChannels: 6,
      numResBlocks: m.num_res_blocks,
      attentionResolutions: String(m.attention_resolutions).split(",").map(Number),
      channelMult: m.channel_mult ? String(m.channel_mult).split(",").map(Number) : defaultChannelMult(size),
      numHeads: m.num_heads,
      numHeadChannels: m.num_head_channels,
      numHeadsUpsample: m.num_heads_upsample,
      useScaleShiftNorm: m.use_scale_shift_norm,
      resblockUpdown: m.resblock_updown,
      useNewAttentionOrder: false,
      text: {
        vocabSize: 50257,
        ctx: m.text_ctx,
        width: m.xf_width,
        layers: m.xf_layers,
        heads: m.xf_heads,
        finalLn: m.xf_final_ln,
        padding: m.xf_padding,
      },
    };
    const model = new UNet(new Init(0), cfg);
    loadOfficial(model, join(GOLDEN, "weights", "glide_small.safetensors"), "glide-unet");
    const npy = (name: string) => {
      const a = readNpy(join(GOLDEN, "glide_fwd", name));
      return tf.tensor(npyToFloat32(a), a.shape, "float32");
    };
    const x = tf.transpose(npy("in_x.npy"), [0, 2, 3, 1]) as Tensor4D;
    const ts = npy("in_t.npy") as Tensor1D;
    const tokens = tf.cast(npy("in_tokens.npy"), "int32") as Tensor2D;
    const mask = npy("in_mask.npy") as Tensor2D;
    const fn = onnxModelFn(model, { threads: 2 });
    try {
      const p = fn(x, ts, { tokens, mask });
      const out = tf.transpose(tf.concat([p.out, p.varValues!], 3), [0, 3, 1, 2]);
      const err = relErr(out.dataSync(), npy("out.npy").dataSync());
      t.diagnostic(`GLIDE small ORT vs official: relative error ${err.toExponential(2)}`);
      assert.ok(err <= TOL, `GLIDE small: relative error ${err} > ${TOL}`);
    } finally {
      fn.runner.dispose();
      model.dispose();
    }
  });
});
