// The UNet port (GLIDE's Text2ImUNet and guided-diffusion's class-conditional UNet) against the official forwards
// in the golden set: every block activation, the text encoder and the output.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { initEngine, type Tensor1D, type Tensor2D, tf } from "../src/core/engine.ts";
import { Init, silu, timestepEmbedding } from "../src/core/layers.ts";
import { loadOfficial } from "../src/nets/convert.ts";
import { defaultChannelMult, UNet, type UNetConfig } from "../src/nets/unet.ts";
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

const skip = goldenSkip("glide_fwd");

const meta = () => goldenMeta<Record<string, Record<string, unknown>>>();

const resolutions = (s: unknown) => String(s).split(",").map(Number);

/** The UNet keys both official families share, from a manifest config block. */
function officialConfig(
  m: Record<string, unknown>,
  outChannels: number,
  useNewAttentionOrder: boolean,
): UNetConfig {
  const size = m.image_size as number;
  return {
    imageSize: size,
    inChannels: 3,
    modelChannels: m.num_channels as number,
    outChannels,
    numResBlocks: m.num_res_blocks as number,
    attentionResolutions: resolutions(m.attention_resolutions),
    channelMult: m.channel_mult ? String(m.channel_mult).split(",").map(Number) : defaultChannelMult(size),
    numHeads: m.num_heads as number,
    numHeadChannels: m.num_head_channels as number,
    numHeadsUpsample: m.num_heads_upsample as number,
    useScaleShiftNorm: m.use_scale_shift_norm as boolean,
    resblockUpdown: m.resblock_updown as boolean,
    useNewAttentionOrder,
  };
}

function glideConfig(m: Record<string, unknown>): UNetConfig {
  return {
    ...officialConfig(m, 6, false),
    text: {
      vocabSize: 50257,
      ctx: m.text_ctx as number,
      width: m.xf_width as number,
      layers: m.xf_layers as number,
      heads: m.xf_heads as number,
      finalLn: m.xf_final_ln as boolean,
      padding: m.xf_padding as boolean,
    },
  };
}

function gdConfig(m: Record<string, unknown>): UNetConfig {
  return {
    ...officialConfig(m, m.learn_sigma ? 6 : 3, m.use_new_attention_order as boolean),
    ...(m.class_cond ? { numClasses: 1000 } : {}),
  };
}

describe("GLIDE Text2ImUNet forward vs the official one", { skip }, () => {
  let model: UNet;

  before(async () => {
    await initEngine("wasm", { quiet: true });
    model = new UNet(new Init(0), glideConfig(meta().small_glide!));
    const report = loadOfficial(model, join(GOLDEN, "weights", "glide_small.safetensors"), "glide-unet");
    assert.equal(report.params, (meta().params as Record<string, number>).glide_small);
  });

  after(() => model?.dispose());

  test("text encoder, time embedding, every block activation and the output", (tc) => {
    const errors: [string, number][] = [];
    tf.tidy(() => {
      const x = toNhwc(goldenTensor("glide_fwd/in_x.npy"));
      const t = tf.cast(goldenTensor("glide_fwd/in_t.npy"), "int32") as Tensor1D;
      const tokens = tf.cast(goldenTensor("glide_fwd/in_tokens.npy"), "int32") as Tensor2D;
      const mask = goldenTensor("glide_fwd/in_mask.npy") as Tensor2D;
      const text = model.text!.encode(tokens, mask);
      errors.push(["text_xf_proj", relErr(text.xfProj, golden("glide_fwd/text_xf_proj.npy"))]);
      errors.push([
        "text_xf_out_NCL",
        relErr(tf.transpose(text.xfOut, [0, 2, 1]), golden("glide_fwd/text_xf_out_NCL.npy")),
      ]);
      const mc = model.config.modelChannels;
      const temb = model.timeEmbed2.forward(silu(model.timeEmbed0.forward(timestepEmbedding(t, mc))));
      errors.push(["act_time_embed", relErr(temb, golden("glide_fwd/act_time_embed.npy"))]);
      const ctx = model.embed(t, { tokens, mask });
      const out = model.forwardWith(x, ctx, (name, h) => {
        errors.push([`act_${name}`, relErr(toNchw(h), golden(`glide_fwd/act_${name}.npy`))]);
      });
      errors.push(["out", relErr(toNchw(out), golden("glide_fwd/out.npy"))]);
    });
    for (const [name, e] of errors) tc.diagnostic(`${name} rel err ${e.toExponential(2)}`);
    assert.equal(errors.length, 3 + 2 * 12 + 1 + 1);
    for (const [name, e] of errors) assert.ok(e <= 1e-5, `${name}: ${e}`);
  });
});

describe("guided-diffusion class-conditional UNet forward vs the official one", { skip }, () => {
  test("output (eps and learned-range values)", async (tc) => {
    await initEngine("wasm", { quiet: true });
    const model = new UNet(new Init(0), gdConfig(meta().small_gd_model!));
    try {
      const report = loadOfficial(model, join(GOLDEN, "weights", "gd_unet_small.safetensors"), "gd-unet");
      assert.equal(report.params, (meta().params as Record<string, number>).gd_unet_small);
      const e = tf.tidy(() => {
        const x = toNhwc(goldenTensor("gd_unet/fwd_in_x.npy"));
        const t = tf.cast(goldenTensor("gd_unet/fwd_in_t.npy"), "int32") as Tensor1D;
        const y = tf.cast(goldenTensor("gd_unet/fwd_in_y.npy"), "int32") as Tensor1D;
        return relErr(toNchw(model.forward(x, t, { y })), golden("gd_unet/fwd_out.npy"));
      });
      tc.diagnostic(`fwd_out rel err ${e.toExponential(2)}`);
      assert.ok(e <= 1e-5, `fwd_out: ${e}`);
    } finally {
      model.dispose();
    }
  });
});
