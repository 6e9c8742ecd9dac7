// channel_mult[0] ≠ 1 (guided-diffusion's 512×512 models use 0.5): the input conv and the output head are
// int(channel_mult[0]·mc) wide. A tiny official UNetModel and EncoderUNetModel with channel_mult (0.5, 1) and seeded
// weights (test/fixtures/unet-half-mult, made by tools/golden/unet_half_mult.py from openai/guided-diffusion's code;
// references computed in float64) load by name into ours and give the same forwards.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { gunzipSync } from "node:zlib";
import { initEngine, type Tensor1D, type Tensor4D, tf } from "../src/core/engine.ts";
import { Init } from "../src/core/layers.ts";
import { npyToFloat32, readNpy } from "../src/core/npy.ts";
import { encoderUNetParamCount, gdUnetConfigFromOfficial, unetParamCount } from "../src/nets/configs.ts";
import { loadOfficial } from "../src/nets/convert.ts";
import { EncoderUNet, type EncoderUNetConfig } from "../src/nets/encoder-unet.ts";
import { type ConvBlock, UNet } from "../src/nets/unet.ts";
import { relErr, toNchw, toNhwc } from "./helpers/golden.ts";

const FIXTURE = join(import.meta.dirname, "fixtures", "unet-half-mult");
const manifest = JSON.parse(readFileSync(join(FIXTURE, "manifest.json"), "utf8")) as {
  unet_flags: Record<string, unknown>;
  classifier: EncoderUNetConfig;
  params: { unet: number; classifier: number };
};
const TOL = 1e-5;

function fixture(name: string): { data: Float32Array; shape: number[] } {
  const a = readNpy(join(FIXTURE, name));
  return { data: npyToFloat32(a), shape: a.shape };
}

describe("channel_mult[0] = 0.5 against guided-diffusion's UNetModel and EncoderUNetModel", () => {
  let dir: string;
  let x: Tensor4D;
  let t: Tensor1D;

  /** The fixture's gzipped state dict, unpacked where loadOfficial can read it. */
  const weights = (name: string) => {
    const path = join(dir, `${name}.safetensors`);
    writeFileSync(path, gunzipSync(readFileSync(join(FIXTURE, `${name}.safetensors.gz`))));
    return path;
  };

  before(async () => {
    await initEngine("wasm", { quiet: true });
    dir = mkdtempSync(join(tmpdir(), "unet-half-mult-"));
    const xr = fixture("x.npy");
    x = tf.tidy(() => toNhwc(tf.tensor(xr.data, xr.shape, "float32")));
    t = tf.tensor1d(fixture("t.npy").data, "float32");
  });

  after(() => {
    x?.dispose();
    t?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("UNet: the first conv and the output head are 32 wide for mc 64, the official weights load, same forward", (tc) => {
    const config = gdUnetConfigFromOfficial(manifest.unet_flags);
    assert.deepEqual(config.channelMult, [0.5, 1]);
    const model = new UNet(new Init(0), config);
    try {
      const first = model.inputBlocks[0]!.blocks[0] as ConvBlock;
      assert.deepEqual(first.conv.weight.shape, [3, 3, 3, 32], "int(0.5·64) outputs");
      assert.equal(model.outNorm.channels, 32);
      assert.deepEqual(model.outConv.weight.shape, [3, 3, 32, 6], "int(0.5·64) inputs");
      const report = loadOfficial(model, weights("unet"), "gd-unet");
      assert.equal(report.params, manifest.params.unet, "every official tensor, no more");
      assert.equal(unetParamCount(config), manifest.params.unet, "count from shapes");
      const before = tf.memory().numTensors;
      const e = tf.tidy(() => relErr(toNchw(model.forward(x, t)), fixture("unet_out.npy")));
      assert.equal(tf.memory().numTensors, before, "no tensor left behind");
      tc.diagnostic(`UNet out rel err vs float64 ${e.toExponential(2)}`);
      assert.ok(e <= TOL, `UNet out rel err ${e}`);
    } finally {
      model.dispose();
    }
  });

  test("EncoderUNet (the classifier): the official weights load, same logits", (tc) => {
    const config = manifest.classifier;
    const model = new EncoderUNet(new Init(0), config);
    try {
      const report = loadOfficial(model, weights("classifier"), "gd-classifier");
      assert.equal(report.params, manifest.params.classifier, "every official tensor, no more");
      assert.equal(encoderUNetParamCount(config), manifest.params.classifier, "count from shapes");
      const before = tf.memory().numTensors;
      const e = tf.tidy(() => relErr(model.logits(x, t), fixture("classifier_logits.npy")));
      assert.equal(tf.memory().numTensors, before, "no tensor left behind");
      tc.diagnostic(`classifier logits rel err vs float64 ${e.toExponential(2)}`);
      assert.ok(e <= TOL, `classifier logits rel err ${e}`);
    } finally {
      model.dispose();
    }
  });
});
