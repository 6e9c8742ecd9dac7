// guided-diffusion's noised classifier (EncoderUNetModel, attention pooling) against the official outputs in the
// golden set (gd_classifier_small weights).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { initEngine, type Tensor1D, type Tensor4D, tf } from "../src/core/engine.ts";
import { Init } from "../src/core/layers.ts";
import { FAMILIES, loadOfficial, toOurLayout } from "../src/nets/convert.ts";
import {
  classifierConfigFromOfficial,
  EncoderUNet,
  type EncoderUNetConfig,
  GD_CLASSIFIER_64,
} from "../src/nets/encoder-unet.ts";
import { GOLDEN, golden, goldenMeta, goldenSkip, goldenTensor, relErr } from "./helpers/golden.ts";

const skip = goldenSkip("gd_classifier");
const WEIGHTS = join(GOLDEN, "weights", "gd_classifier_small.safetensors");

const meta = () => goldenMeta();

const smallConfig = (): EncoderUNetConfig =>
  classifierConfigFromOfficial(meta().small_gd_classifier as Record<string, unknown>);

describe("guided-diffusion classifier vs the official outputs", { skip }, () => {
  let model: EncoderUNet;
  let x: Tensor4D;
  let t: Tensor1D;
  let y: Tensor1D;

  before(async () => {
    await initEngine("wasm", { quiet: true });
    model = new EncoderUNet(new Init(0), smallConfig());
    const report = loadOfficial(model, WEIGHTS, "gd-classifier");
    assert.equal(report.params, (meta().params as Record<string, number>).gd_classifier_small);
    x = tf.tidy(() => tf.transpose(goldenTensor("gd_classifier/in_x.npy"), [0, 2, 3, 1]) as Tensor4D);
    t = tf.cast(goldenTensor("gd_classifier/in_t.npy"), "int32") as Tensor1D;
    y = tf.cast(goldenTensor("gd_classifier/in_y.npy"), "int32") as Tensor1D;
  });

  after(() => {
    model?.dispose();
    for (const v of [x, t, y]) v?.dispose();
  });

  test("the official names and shapes, one to one", () => {
    const index = JSON.parse(readFileSync(WEIGHTS.replace(/\.safetensors$/, ".index.json"), "utf8")) as {
      tensors: { name: string }[];
    };
    const ours = model.namedParameters().map(([n]) => n);
    assert.deepEqual([...ours].sort(), index.tensors.map((e) => e.name).sort());
  });

  test("logits", (tc) => {
    const logits = model.logits(x, t);
    const e = relErr(logits, golden("gd_classifier/logits.npy"));
    tc.diagnostic(`logits rel err ${e.toExponential(2)}`);
    logits.dispose();
    assert.ok(e <= 1e-5, `logits ${e}`);
  });

  test("guidance gradient cond_grad (scale from the manifest), without leaking tensors", (tc) => {
    const scale = meta().classifier_scale as number;
    const before = tf.memory().numTensors;
    const grad = model.condGrad(x, t, y, scale);
    assert.equal(tf.memory().numTensors, before + 1);
    const nchw = tf.transpose(grad, [0, 3, 1, 2]);
    const e = relErr(nchw, golden("gd_classifier/cond_grad.npy"));
    tc.diagnostic(`cond_grad rel err ${e.toExponential(2)}`);
    grad.dispose();
    nchw.dispose();
    assert.equal(tf.memory().numTensors, before);
    assert.ok(e <= 1e-5, `cond_grad ${e}`);
  });
});

describe("EncoderUNet config and loader errors", { skip }, () => {
  before(async () => {
    await initEngine("wasm", { quiet: true });
  });

  test("the released 64x64 classifier's layout", () => {
    assert.deepEqual(GD_CLASSIFIER_64.channelMult, [1, 2, 3, 4]);
    assert.equal(GD_CLASSIFIER_64.numHeadChannels, 64);
    assert.equal(GD_CLASSIFIER_64.outChannels, 1000);
    assert.equal(GD_CLASSIFIER_64.useNewAttentionOrder, false);
  });

  test("missing, unexpected and mis-shaped tensors are all named, with the file", () => {
    // Depth 2 adds a second res block per level: new blocks are missing, later indices shift.
    const deeper = new EncoderUNet(new Init(1), { ...smallConfig(), numResBlocks: 2 });
    assert.throws(
      () => loadOfficial(deeper, WEIGHTS, "gd-classifier"),
      (e: Error) =>
        e.message.includes(WEIGHTS) &&
        e.message.includes("missing tensor 'input_blocks.4.1.qkv.weight' (expected shape [384, 128, 1])") &&
        e.message.includes(
          "unexpected tensor 'input_blocks.3.0.skip_connection.weight' (shape [128, 64, 1, 1])",
        ) &&
        e.message.includes(
          "shape mismatch for 'input_blocks.3.0.in_layers.2.weight': expected [64, 64, 3, 3], found [128, 64, 3, 3]",
        ),
    );
    deeper.dispose();
    const fewer = new EncoderUNet(new Init(1), { ...smallConfig(), outChannels: 10 });
    assert.throws(
      () => loadOfficial(fewer, WEIGHTS, "gd-classifier"),
      /0 missing, 0 unexpected, 2 mis-shaped[\s\S]*shape mismatch for 'out\.2\.c_proj\.weight': expected \[10, 256, 1\], found \[1000, 256, 1\]/,
    );
    fewer.dispose();
  });

  test("an unknown file is a clear error", () => {
    const m = new EncoderUNet(new Init(1), smallConfig());
    assert.throws(
      () => loadOfficial(m, join(GOLDEN, "weights", "nope.safetensors"), "gd-classifier"),
      /nope\.safetensors: cannot open \(file not found\)/,
    );
    m.dispose();
  });
});

describe("official → our layouts and names (no golden files needed)", () => {
  before(async () => {
    await initEngine("wasm", { quiet: true });
  });

  test("conv [out, in, kh, kw] → [kh, kw, in, out], conv1d [out, in, 1] → [1, 1, in, out], linear → [in, out]", () => {
    const iota = (n: number) => Float32Array.from({ length: n }, (_, i) => i);
    const conv = toOurLayout(iota(2 * 3 * 4 * 5), [2, 3, 4, 5], "conv");
    assert.deepEqual(conv.shape, [4, 5, 3, 2]);
    // ours[kh=1][kw=2][in=0][out=1] = official[out=1][in=0][kh=1][kw=2]
    assert.equal((conv.arraySync() as number[][][][])[1]![2]![0]![1], 1 * 60 + 0 * 20 + 1 * 5 + 2);
    const c1 = toOurLayout(iota(6), [3, 2, 1], "conv1d");
    assert.deepEqual(c1.shape, [1, 1, 2, 3]);
    assert.deepEqual((c1.arraySync() as number[][][][])[0]![0], [
      [0, 2, 4],
      [1, 3, 5],
    ]);
    const lin = toOurLayout(iota(6), [3, 2], "linear");
    assert.deepEqual(lin.arraySync(), [
      [0, 2, 4],
      [1, 3, 5],
    ]);
    for (const t of [conv, c1, lin]) t.dispose();
  });

  test("GLIDE's top-level text encoder lives under `text`, and layouts follow the official module types", () => {
    const g = FAMILIES["glide-unet"];
    for (const n of [
      "token_embedding.weight",
      "positional_embedding",
      "padding_embedding",
      "transformer.resblocks.1.mlp.c_proj.weight",
      "final_ln.bias",
      "transformer_proj.weight",
    ]) {
      assert.equal(g.toOurs(n), `text.${n}`);
      assert.equal(g.toOfficial(`text.${n}`), n);
    }
    assert.equal(g.toOurs("input_blocks.1.1.qkv.weight"), "input_blocks.1.1.qkv.weight");
    assert.equal(g.layout("transformer.resblocks.1.mlp.c_proj.weight", 2), "linear");
    assert.equal(g.layout("input_blocks.4.1.proj_out.weight", 4), "conv1d");
    assert.equal(g.layout("input_blocks.4.0.skip_connection.weight", 4), "conv");
    assert.equal(g.layout("token_embedding.weight", 2), "asis");
    assert.equal(g.layout("label_emb.weight", 2), "asis");
    assert.equal(FAMILIES["gd-classifier"].layout("out.2.positional_embedding", 2), "asis");
    assert.equal(FAMILIES["glide-clip"].layout("image_encoder.blocks.input.w_t", 2), "asis");
    assert.equal(FAMILIES["glide-clip"].layout("image_encoder.blocks.output.f.w", 2), "linear");
  });
});
