// The released models' configurations: the official flag sets give the official parameter counts (computed from
// shapes, never allocated), the shape counts agree with real instantiations, and the UNet's super-resolution and
// inpainting inputs are concatenated as GLIDE's model classes do.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { initEngine, type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../src/core/engine.ts";
import { Init } from "../src/core/layers.ts";
import { defaultGoldenDir } from "../src/core/paths.ts";
import { ClipModel, clipConfigFromOfficial } from "../src/nets/clip.ts";
import {
  clipParamCount,
  encoderUNetParamCount,
  GD_CLASSIFIER_64,
  GLIDE_BASE,
  GLIDE_BASE_FLAGS,
  GLIDE_BASE_INPAINT,
  GLIDE_CLIP_CONFIG,
  GLIDE_UPSAMPLER,
  GLIDE_UPSAMPLER_INPAINT,
  gdUnetConfigFromOfficial,
  glideConfigFromOfficial,
  unetParamCount,
} from "../src/nets/configs.ts";
import { ConvClip } from "../src/nets/conv-clip.ts";
import { classifierConfigFromOfficial, EncoderUNet } from "../src/nets/encoder-unet.ts";
import { UNet, type UNetConfig, unetInputChannels } from "../src/nets/unet.ts";
import {
  buildNoisedClip,
  classifierConfig,
  classifierModelSchema,
  noisedClipConfig,
  noisedClipModelSchema,
} from "../src/train/tasks.ts";

const GOLDEN = defaultGoldenDir();
const MANIFEST = join(GOLDEN, "manifest.json");
const noGolden = existsSync(MANIFEST) ? false : `golden manifest not found at ${MANIFEST}`;
const meta = () => JSON.parse(readFileSync(MANIFEST, "utf8")).meta as Record<string, Record<string, unknown>>;

before(async () => {
  await initEngine("wasm", { quiet: true });
});

/** A tiny GLIDE-shaped config (8×8, two levels) that instantiates in milliseconds. */
function tiny(extra: Partial<UNetConfig> = {}): UNetConfig {
  return glideConfigFromOfficial({
    ...GLIDE_BASE_FLAGS,
    image_size: 8,
    num_channels: 32,
    num_res_blocks: 1,
    channel_mult: "1,2",
    num_head_channels: 32,
    attention_resolutions: "4",
    text_ctx: 6,
    xf_width: 32,
    xf_layers: 1,
    xf_heads: 2,
    ...extra,
  });
}

function built<T extends { numParams(): number; dispose(): void }>(m: T): number {
  try {
    return m.numParams();
  } finally {
    m.dispose();
  }
}

describe("official GLIDE configurations", () => {
  test("base 64×64: model_and_diffusion_defaults()", () => {
    const c = GLIDE_BASE;
    assert.equal(c.imageSize, 64);
    assert.equal(c.modelChannels, 192);
    assert.equal(c.numResBlocks, 3);
    assert.deepEqual(c.channelMult, [1, 2, 3, 4]);
    assert.deepEqual(c.attentionResolutions, [32, 16, 8]);
    assert.equal(c.numHeadChannels, 64);
    assert.equal(c.outChannels, 6, "learned sigma");
    assert.deepEqual(c.text, {
      vocabSize: 50257,
      ctx: 128,
      width: 512,
      layers: 16,
      heads: 8,
      finalLn: true,
      padding: true,
    });
    assert.equal(unetInputChannels(c), 3);
  });

  test("upsampler 64→256 and the inpainting variants: input channels", () => {
    assert.equal(GLIDE_UPSAMPLER.imageSize, 256);
    assert.equal(GLIDE_UPSAMPLER.numResBlocks, 2);
    assert.deepEqual(GLIDE_UPSAMPLER.channelMult, [1, 1, 2, 2, 4, 4]);
    assert.equal(GLIDE_UPSAMPLER.superRes, true);
    assert.equal(unetInputChannels(GLIDE_UPSAMPLER), 6, "x + upsampled low-res");
    assert.equal(unetInputChannels(GLIDE_BASE_INPAINT), 7, "x + image·mask + mask (3·2+1)");
    assert.equal(unetInputChannels(GLIDE_UPSAMPLER_INPAINT), 10, "x + image·mask + mask + low-res (3·3+1)");
  });

  test("parameter counts equal the official ones, computed from shapes only", () => {
    assert.equal(unetParamCount(GLIDE_BASE), 385_030_726, "GLIDE base");
    assert.equal(unetParamCount(GLIDE_UPSAMPLER), 398_361_286, "GLIDE upsampler");
    // The inpainting models differ only in their first conv: 4 more input channels × 3×3 × 192 outputs.
    assert.equal(unetParamCount(GLIDE_BASE_INPAINT), 385_030_726 + 4 * 9 * 192, "base-inpaint");
    assert.equal(unetParamCount(GLIDE_UPSAMPLER_INPAINT), 398_361_286 + 4 * 9 * 192, "upsample-inpaint");
  });

  test("noised CLIP and the 64×64 classifier configurations", () => {
    assert.equal(GLIDE_CLIP_CONFIG.nEmbd, 512);
    assert.equal(GLIDE_CLIP_CONFIG.nVocab, 65536);
    assert.equal(GD_CLASSIFIER_64.modelChannels, 128);
    assert.equal(GD_CLASSIFIER_64.numResBlocks, 4);
    assert.ok(clipParamCount(GLIDE_CLIP_CONFIG) > 1e8, "CLIP count is computed");
    assert.ok(encoderUNetParamCount(GD_CLASSIFIER_64) > 1e7, "classifier count is computed");
  });
});

describe("guided-diffusion's 512×512 models: channel_mult starts at 0.5", () => {
  // The flags of guided-diffusion's README (model: MODEL_FLAGS of the 512x512 row, with model_and_diffusion_defaults
  // for the rest; classifier: classifier_defaults at image_size 512). The official totals come from
  // `tools/golden/unet_half_mult.py --counts`, which builds both with guided-diffusion's own create_* functions.
  test("the diffusion model: the official count (input conv and output head int(0.5·256) = 128 wide)", () => {
    const c = gdUnetConfigFromOfficial({
      image_size: 512,
      num_channels: 256,
      num_res_blocks: 2,
      channel_mult: "",
      num_heads: 4,
      num_head_channels: 64,
      num_heads_upsample: -1,
      attention_resolutions: "32,16,8",
      use_scale_shift_norm: true,
      resblock_updown: true,
      learn_sigma: true,
      class_cond: true,
    });
    assert.deepEqual(c.channelMult, [0.5, 1, 1, 2, 2, 4, 4]);
    assert.equal(unetParamCount(c), 558_997_638);
  });

  test("the classifier: the official count", () => {
    const c = classifierConfigFromOfficial({
      image_size: 512,
      classifier_use_fp16: false,
      classifier_width: 128,
      classifier_depth: 2,
      classifier_attention_resolutions: "32,16,8",
      classifier_use_scale_shift_norm: true,
      classifier_resblock_updown: true,
      classifier_pool: "attention",
    });
    assert.equal(encoderUNetParamCount(c), 54_448_360);
  });
});

describe("shape counts agree with instantiated modules", () => {
  test("tiny GLIDE UNets: plain, super-res, inpaint, both", () => {
    for (const extra of [{}, { super_res: true }, { inpaint: true }, { super_res: true, inpaint: true }]) {
      const config = tiny(extra as Partial<UNetConfig>);
      const real = built(new UNet(new Init(1), config));
      assert.equal(unetParamCount(config), real, `count for ${JSON.stringify(extra)}`);
    }
  });

  test("the zoo's noised CLIP with and without a convolutional stem", () => {
    const vit = (raw: object) => {
      const m = noisedClipModelSchema.parse(raw);
      assert.equal(m.tower, "vit", "a block without `tower` is GLIDE's ViT");
      return noisedClipConfig(m as Extract<typeof m, { tower: "vit" }>, 16, 50);
    };
    const plain = vit({});
    assert.equal(plain.convStem, undefined, "no stem unless asked: GLIDE's design");
    const stem = vit({ convStem: [8, 6] });
    assert.deepEqual(stem.convStem, [8, 6]);
    for (const config of [plain, stem]) {
      const model = new ClipModel(new Init(1), config);
      const z = tf.tidy(() =>
        model.embedImage(tf.zeros([2, 16, 16, 3]) as Tensor4D, tf.tensor1d([0, 49], "int32") as Tensor1D),
      );
      assert.deepEqual(z.shape, [2, config.nEmbd], "image embedding shape");
      z.dispose();
      assert.equal(clipParamCount(config), built(model), `count with stem ${config.convStem}`);
    }
    // 3×3 convolutions 3→8→6 with biases, and a patch projection from 6 channels instead of 3.
    const patch = plain.patchSize ** 2 * plain.nHeadImage * plain.nHeadStateImage;
    assert.equal(clipParamCount(stem) - clipParamCount(plain), 9 * 3 * 8 + 8 + 9 * 8 * 6 + 6 + 3 * patch);
    assert.throws(() => noisedClipModelSchema.parse({ convStem: [0] }), /convStem/);
  });

  test("the zoo's noised CLIP with a convolutional image tower", () => {
    const m = noisedClipModelSchema.parse({ tower: "conv", modelChannels: 32, channelMult: [1, 2] });
    const model = buildNoisedClip(m, 16, 50, new Init(1));
    assert.ok(model instanceof ConvClip);
    const before = tf.memory().numTensors;
    const z = tf.tidy(() =>
      model.embedImage(tf.zeros([2, 16, 16, 3]) as Tensor4D, tf.tensor1d([0, 49], "int32") as Tensor1D),
    );
    assert.deepEqual(z.shape, [2, 64], "image embedding shape");
    const norms = tf.tidy(() => tf.sqrt(tf.sum(tf.square(z), 1)).arraySync() as number[]);
    for (const n of norms) assert.ok(Math.abs(n - 1) < 1e-5, `unit norm, got ${n}`);
    z.dispose();
    assert.equal(tf.memory().numTensors, before, "no tensor leak");
    // Its image tower is the noised classifier's: the same parameters but for the output width.
    const classifier = built(
      new EncoderUNet(
        new Init(1),
        classifierConfig(classifierModelSchema.parse({ channelMult: [1, 2] }), 16, 64),
      ),
    );
    const towers = model.namedParameters().filter(([n]) => n.startsWith("image_encoder."));
    assert.equal(
      towers.reduce((a, [, p]) => a + p.size, 0),
      classifier,
    );
    // A key of the other tower is an error naming it.
    assert.throws(() => noisedClipModelSchema.parse({ tower: "conv", patchSize: 2 }), /patchSize/);
    assert.throws(() => noisedClipModelSchema.parse({ tower: "cnn" }), /tower/);
    model.dispose();
  });

  test("the golden set's small models match the manifest's counts", { skip: noGolden }, () => {
    const m = meta();
    const params = m.params as Record<string, number>;
    const glide = glideConfigFromOfficial(m.small_glide!);
    assert.equal(unetParamCount(glide), params.glide_small, "glide_small");
    assert.equal(built(new UNet(new Init(1), glide)), params.glide_small, "glide_small built");
    const gd = gdUnetConfigFromOfficial(m.small_gd_model!);
    assert.equal(unetParamCount(gd), params.gd_unet_small, "gd_unet_small");
    assert.equal(built(new UNet(new Init(1), gd)), params.gd_unet_small, "gd_unet_small built");
    const cls = classifierConfigFromOfficial(m.small_gd_classifier!);
    assert.equal(encoderUNetParamCount(cls), params.gd_classifier_small, "gd_classifier_small");
    assert.equal(built(new EncoderUNet(new Init(1), cls)), params.gd_classifier_small, "classifier built");
    const clip = clipConfigFromOfficial(m.small_clip!);
    assert.equal(clipParamCount(clip), params.clip_small, "clip_small");
    assert.equal(built(new ClipModel(new Init(1), clip)), params.clip_small, "clip built");
  });
});

describe("super-resolution and inpainting inputs", () => {
  test("low-res input: bilinear with half-pixel centres (PyTorch align_corners=False)", () => {
    const model = new UNet(new Init(2), tiny({ super_res: true } as Partial<UNetConfig>));
    try {
      const got = tf.tidy(() => {
        const x = tf.zeros([1, 8, 8, 3]) as Tensor4D;
        // Columns 0 and 1 of a 1×2 low-res row: 0 and 4.
        const low = tf.tile(tf.reshape(tf.tensor1d([0, 4]), [1, 1, 2, 1]), [1, 2, 1, 3]) as Tensor4D;
        const input = model.modelInput(x, { lowRes: low });
        assert.deepEqual(input.shape, [1, 8, 8, 6], "x and the upsampled image");
        return Array.from(tf.slice(input, [0, 0, 0, 3], [1, 1, 8, 1]).dataSync());
      });
      // Source coordinate (i + 0.5)/4 − 0.5, clamped at the border.
      assert.deepEqual(got, [0, 0, 0.5, 1.5, 2.5, 3.5, 4, 4]);
      assert.throws(() => model.modelInput(tf.zeros([1, 8, 8, 3]) as Tensor4D, {}), /pass the low-res image/);
    } finally {
      model.dispose();
    }
  });

  test("inpainting input: [x, image·mask, mask], zeros when absent; the forward runs", () => {
    const model = new UNet(new Init(3), tiny({ inpaint: true } as Partial<UNetConfig>));
    try {
      tf.tidy(() => {
        const x = tf.fill([1, 8, 8, 3], 0.5) as Tensor4D;
        const image = tf.fill([1, 8, 8, 3], 2) as Tensor4D;
        const mask = tf.concat([tf.ones([1, 8, 4, 1]), tf.zeros([1, 8, 4, 1])], 2) as Tensor4D;
        const input = model.modelInput(x, { inpaintImage: image, inpaintMask: mask });
        assert.deepEqual(input.shape, [1, 8, 8, 7], "7 input channels");
        const px = (w: number) => Array.from(tf.slice(input, [0, 0, w, 0], [1, 1, 1, 7]).dataSync());
        assert.deepEqual(px(0), [0.5, 0.5, 0.5, 2, 2, 2, 1], "known pixel");
        assert.deepEqual(px(7), [0.5, 0.5, 0.5, 0, 0, 0, 0], "unknown pixel");
        const none = model.modelInput(x, {});
        assert.equal(
          tf.sum(tf.slice(none, [0, 0, 0, 3], [1, 8, 8, 4])).dataSync()[0],
          0,
          "zeros when absent",
        );
        const out = model.forward(x, tf.tensor1d([5], "int32") as Tensor1D, {
          tokens: tf.zeros([1, 6], "int32") as Tensor2D,
          mask: tf.zeros([1, 6]) as Tensor2D,
          inpaintImage: image,
          inpaintMask: mask,
        });
        assert.deepEqual(out.shape, [1, 8, 8, 6], "eps and variance values");
      });
    } finally {
      model.dispose();
    }
  });
});
