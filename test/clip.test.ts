// GLIDE's noised CLIP against the official PyTorch outputs in the golden set (clip_small weights).

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { initEngine, type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../src/core/engine.ts";
import { Init } from "../src/core/layers.ts";
import {
  type ClipConfig,
  ClipModel,
  clipAttentionBias,
  clipConfigFromOfficial,
  glideClipNameMap,
} from "../src/nets/clip.ts";
import { loadOfficial } from "../src/nets/convert.ts";
import {
  GOLDEN,
  golden,
  goldenMeta,
  goldenSkip,
  goldenTensor,
  relErr,
  toNchw,
  toNhwc,
} from "./helpers/golden.ts";

const skip = goldenSkip("clip");
const WEIGHTS = join(GOLDEN, "weights", "clip_small.safetensors");

const meta = () => goldenMeta();

describe("GLIDE noised CLIP vs the official outputs", { skip }, () => {
  let model: ClipModel;
  let config: ClipConfig;
  let tokens: Tensor2D;
  let lens: Tensor1D;
  let x: Tensor4D;
  let t: Tensor1D;

  before(async () => {
    await initEngine("wasm", { quiet: true });
    config = clipConfigFromOfficial(meta().small_clip as Record<string, unknown>);
    model = new ClipModel(new Init(0), config);
    loadOfficial(model, WEIGHTS, "glide-clip");
    tokens = tf.cast(goldenTensor("clip/text_tokens.npy"), "int32") as Tensor2D;
    lens = tf.cast(goldenTensor("clip/text_lens.npy"), "int32") as Tensor1D;
    x = tf.tidy(() => toNhwc(goldenTensor("clip/cond_in_x.npy")));
    t = tf.cast(goldenTensor("clip/cond_in_t_original.npy"), "int32") as Tensor1D;
  });

  after(() => {
    model?.dispose();
    for (const v of [tokens, lens, x, t]) v?.dispose();
  });

  test("attention biases are the official padded masks (text causal, image dense)", () => {
    const text = golden("clip/text_attn_bias.npy");
    const image = golden("clip/image_attn_bias.npy");
    assert.deepEqual(clipAttentionBias(config.maxTextLen, true), text.data);
    assert.deepEqual(clipAttentionBias(1 + (config.imageSize / config.patchSize) ** 2, false), image.data);
  });

  test("text features z_t_raw and z_t", (tc) => {
    const raw = model.encodeText(tokens, lens);
    const z = model.embedText(tokens, lens);
    const eRaw = relErr(raw, golden("clip/z_t_raw.npy"));
    const eZ = relErr(z, golden("clip/z_t.npy"));
    tc.diagnostic(`z_t_raw rel err ${eRaw.toExponential(2)}, z_t ${eZ.toExponential(2)}`);
    raw.dispose();
    z.dispose();
    assert.ok(eRaw <= 1e-5, `z_t_raw ${eRaw}`);
    assert.ok(eZ <= 1e-5, `z_t ${eZ}`);
  });

  test("image features z_i_raw and z_i at the original timesteps", (tc) => {
    const raw = model.encodeImage(x, t);
    const z = model.embedImage(x, t);
    const eRaw = relErr(raw, golden("clip/z_i_raw.npy"));
    const eZ = relErr(z, golden("clip/z_i.npy"));
    tc.diagnostic(`z_i_raw rel err ${eRaw.toExponential(2)}, z_i ${eZ.toExponential(2)}`);
    raw.dispose();
    z.dispose();
    assert.ok(eRaw <= 1e-5, `z_i_raw ${eRaw}`);
    assert.ok(eZ <= 1e-5, `z_i ${eZ}`);
  });

  test("guidance gradient cond_grad (scale from the manifest) and the loss", (tc) => {
    const scale = meta().clip_guidance_scale as number;
    const zt = model.embedText(tokens, lens);
    const loss = tf.tidy(() =>
      tf.mul(tf.exp(tf.reshape(model.logitScale, [])), tf.sum(tf.mul(zt, model.embedImage(x, t)))),
    );
    const eLoss = relErr(tf.reshape(loss, [1]), golden("clip/loss.npy"));
    const grad = model.condGrad(x, t, zt, scale);
    const nchw = toNchw(grad);
    const eGrad = relErr(nchw, golden("clip/cond_grad.npy"));
    tc.diagnostic(`loss rel err ${eLoss.toExponential(2)}, cond_grad ${eGrad.toExponential(2)}`);
    for (const v of [zt, loss, grad, nchw]) v.dispose();
    assert.ok(eLoss <= 1e-5, `loss ${eLoss}`);
    assert.ok(eGrad <= 1e-5, `cond_grad ${eGrad}`);
  });

  test("no tensors leak from embedText, embedImage and condGrad", () => {
    const zt = model.embedText(tokens, lens); // warm-up allocations outside the count
    const before = tf.memory().numTensors;
    for (let i = 0; i < 2; i++) {
      model.embedText(tokens, lens).dispose();
      model.encodeImage(x, t).dispose();
      model.embedImage(x, t).dispose();
      model.condGrad(x, t, zt, 3).dispose();
    }
    assert.equal(tf.memory().numTensors, before);
    zt.dispose();
  });
});

describe("loadOfficial errors (glide-clip)", { skip }, () => {
  before(async () => {
    await initEngine("wasm", { quiet: true });
  });

  const small = () => clipConfigFromOfficial(meta().small_clip as Record<string, unknown>);

  test("a missing tensor is named in official terms, with its expected shape and the file", () => {
    const m = new ClipModel(new Init(1), { ...small(), nXfBlocksText: 3 });
    const before = m.text.blocks[0]!.fAttn.fQ.weight.dataSync().slice();
    assert.throws(
      () => loadOfficial(m, WEIGHTS, "glide-clip"),
      (e: Error) =>
        e.message.includes(WEIGHTS) &&
        e.message.includes(
          "missing tensor 'text_encoder.blocks.block_2.f_attn.f_q.w' (expected shape [64, 64])",
        ) &&
        e.message.includes("missing tensor 'text_encoder.blocks.block_2.f_attn.ln.g' (expected shape [64])"),
    );
    // Nothing is assigned when anything is wrong.
    assert.deepEqual(m.text.blocks[0]!.fAttn.fQ.weight.dataSync(), before);
    m.dispose();
  });

  test("an unexpected tensor is reported", () => {
    const m = new ClipModel(new Init(1), { ...small(), nXfBlocksImage: 1 });
    assert.throws(
      () => loadOfficial(m, WEIGHTS, "glide-clip"),
      /0 missing, 15 unexpected, 0 mis-shaped[\s\S]*unexpected tensor 'image_encoder\.blocks\.block_1\.f_attn\.f_q\.w' \(shape \[64, 64\]/,
    );
    m.dispose();
  });

  test("a mis-shaped tensor gives the name, the expected and the found shape", () => {
    const m = new ClipModel(new Init(1), { ...small(), nEmbd: 32 });
    assert.throws(
      () => loadOfficial(m, WEIGHTS, "glide-clip"),
      (e: Error) =>
        e.message.includes(
          "shape mismatch for 'image_encoder.blocks.output.f.w': expected [32, 64], found [64, 64]",
        ) && e.message.includes(WEIGHTS),
    );
    m.dispose();
  });

  test("the name map is a bijection on every official name", () => {
    const m = new ClipModel(new Init(1), small());
    const ours = m.namedParameters().map(([n]) => n);
    for (const n of ours) assert.equal(glideClipNameMap.toOurs(glideClipNameMap.toOfficial(n)), n);
    assert.ok(ours.includes("image_encoder.blocks.input.patch_proj.weight"));
    assert.equal(
      glideClipNameMap.toOfficial("text_encoder.blocks.output.ln.weight"),
      "text_encoder.blocks.output.ln.g",
    );
    m.dispose();
  });
});
