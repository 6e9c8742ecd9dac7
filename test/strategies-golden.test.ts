// The paper's three guidance strategies, run through the registry with the real small official models, against
// whole guided sampling trajectories recorded from the official code (recorded x_T and per-step noise).
// Heavy on a CPU (each trajectory is 10–20 steps of 64×64 forwards), so every trajectory runs exactly once.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { createDiffusion } from "../src/core/diffusion.ts";
import { initEngine, type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../src/core/engine.ts";
import { Init } from "../src/core/layers.ts";
import { npyToFloat32, readNpy } from "../src/core/npy.ts";
import { defaultGoldenDir } from "../src/core/paths.ts";
import { sampleDdpm } from "../src/core/samplers.ts";
import type { NoiseSource } from "../src/core/types.ts";
import { ClipModel, clipConfigFromOfficial } from "../src/models/clip.ts";
import { loadOfficial } from "../src/models/convert.ts";
import { classifierConfigFromOfficial, EncoderUNet } from "../src/models/encoder-unet.ts";
import { defaultChannelMult, UNet, type UNetConfig } from "../src/models/unet.ts";
import { buildStrategy } from "../src/strategies/registry.ts";
import type { Conditioning, GuidanceModels } from "../src/strategies/strategy.ts";
import { unetModel } from "../src/strategies/strategy.ts";

const GOLDEN = defaultGoldenDir();
const has = (...parts: string[]) => existsSync(join(GOLDEN, ...parts));
const skipUnless = (section: string, ...weights: string[]) =>
  has("manifest.json") && has(section) && weights.every((w) => has("weights", `${w}.safetensors`))
    ? false
    : `golden reference ${section} (or its weights) not found under ${GOLDEN} (set GUIDANCE_LAB_GOLDEN)`;

type Meta = Record<string, unknown> & Record<"small_glide" | "small_gd_model", Record<string, unknown>>;
const meta = (): Meta => JSON.parse(readFileSync(join(GOLDEN, "manifest.json"), "utf8")).meta;

function load(name: string): { data: Float32Array; shape: number[] } {
  const a = readNpy(join(GOLDEN, name));
  return { data: npyToFloat32(a), shape: a.shape };
}

/** The first `n` samples of an NCHW array [B, C, H, W] (or of each step of [S, B, C, H, W]) as NHWC. */
function nhwcRows(a: { data: Float32Array; shape: number[] }, n: number, step?: number): Tensor4D {
  const [b, c, h, w] = (step === undefined ? a.shape : a.shape.slice(1)) as [number, number, number, number];
  const per = b * c * h * w;
  const base = step === undefined ? 0 : step * per;
  return tf.tidy(
    () =>
      tf.transpose(
        tf.tensor4d(a.data.subarray(base, base + n * c * h * w), [n, c, h, w]),
        [0, 2, 3, 1],
      ) as Tensor4D,
  );
}

/** Replays the recorded noise of the first `n` samples. */
const replay = (noise: { data: Float32Array; shape: number[] }, n: number): NoiseSource => {
  return (k) => nhwcRows(noise, n, k);
};

/** max |ours − ref| / max |ref| against the first rows of an NCHW reference. */
function relErr(ours: Tensor4D, ref: { data: Float32Array; shape: number[] }): number {
  const got = tf.tidy(() => tf.transpose(ours, [0, 3, 1, 2]).dataSync());
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < got.length; i++) {
    diff = Math.max(diff, Math.abs(got[i]! - ref.data[i]!));
    scale = Math.max(scale, Math.abs(ref.data[i]!));
  }
  return diff / scale;
}

const resolutions = (s: unknown) => String(s).split(",").map(Number);

function unetConfigFromMeta(m: Record<string, unknown>, text: boolean): UNetConfig {
  const size = m.image_size as number;
  return {
    imageSize: size,
    inChannels: 3,
    modelChannels: m.num_channels as number,
    outChannels: text || m.learn_sigma ? 6 : 3,
    numResBlocks: m.num_res_blocks as number,
    attentionResolutions: resolutions(m.attention_resolutions),
    channelMult: m.channel_mult ? String(m.channel_mult).split(",").map(Number) : defaultChannelMult(size),
    numHeads: m.num_heads as number,
    numHeadChannels: m.num_head_channels as number,
    numHeadsUpsample: m.num_heads_upsample as number,
    useScaleShiftNorm: m.use_scale_shift_norm as boolean,
    resblockUpdown: m.resblock_updown as boolean,
    useNewAttentionOrder: Boolean(m.use_new_attention_order),
    ...(text
      ? {
          text: {
            vocabSize: 50257,
            ctx: m.text_ctx as number,
            width: m.xf_width as number,
            layers: m.xf_layers as number,
            heads: m.xf_heads as number,
            finalLn: m.xf_final_ln as boolean,
            padding: m.xf_padding as boolean,
          },
        }
      : {}),
    ...(m.class_cond ? { numClasses: 1000 } : {}),
  };
}

function diffusionOf(m: Record<string, unknown>) {
  const schedule =
    m.noise_schedule === "cosine" ? "cosine" : (m.noise_schedule as "squaredcos_cap_v2" | "linear");
  return createDiffusion({
    schedule,
    steps: m.diffusion_steps as number,
    respacing: String(m.timestep_respacing ?? ""),
    modelVarType: "learned_range",
  });
}

/**
 * GLIDE's encoder for the recorded token rows: prompt i of the manifest → row i of `tokens`/`mask`, and the empty
 * prompt → row `uncondRow` (all padding).
 */
function recordedTokens(prompts: readonly string[], section: string, uncondRow?: number) {
  const tokens = load(`${section}/${section === "glide_cfg" ? "in_tokens" : "tokens"}.npy`);
  const mask = load(`${section}/${section === "glide_cfg" ? "in_mask" : "mask"}.npy`);
  const ctx = tokens.shape[1]!;
  return (asked: readonly string[]): Conditioning => {
    const rows = asked.map((p) => {
      const i = p === "" ? uncondRow : prompts.indexOf(p);
      if (i === undefined || i < 0) throw new Error(`no recorded tokens for prompt '${p}'`);
      return i;
    });
    const pick = (a: Float32Array) =>
      Float32Array.from(rows.flatMap((r) => Array.from(a.subarray(r * ctx, (r + 1) * ctx))));
    return {
      tokens: tf.tensor2d(Int32Array.from(pick(tokens.data)), [rows.length, ctx], "int32"),
      mask: tf.tensor2d(pick(mask.data), [rows.length, ctx]),
    };
  };
}

describe("guidance strategies reproduce the official guided trajectories", () => {
  test("cfg: GLIDE small, classifier-free guided DDPM (glide_cfg/samples)", {
    skip: skipUnless("glide_cfg", "glide_small"),
  }, async (tc) => {
    await initEngine("wasm", { quiet: true });
    const m = meta();
    const prompts = m.prompts as string[];
    const unet = new UNet(new Init(0), unetConfigFromMeta(m.small_glide, true));
    try {
      loadOfficial(unet, join(GOLDEN, "weights", "glide_small.safetensors"), "glide-unet");
      const d = diffusionOf(m.small_glide);
      const models: GuidanceModels = {
        model: unetModel(unet),
        // The recorded batch is [prompts; unconditional]: the unconditional rows start after the prompts.
        encode: recordedTokens(prompts, "glide_cfg", prompts.length),
      };
      const g = buildStrategy({ kind: "cfg", scale: m.guidance_scale as number }, models).bind(prompts);
      const n = prompts.length;
      const xT = nhwcRows(load("glide_cfg/x_T.npy"), n);
      try {
        // The official model_fn evaluates both halves on the FIRST half of x, so the guided half's trajectory is
        // exactly a batch of the prompts alone.
        const out = sampleDdpm(d, g.denoise, xT, {
          noise: replay(load("glide_cfg/noise_per_step.npy"), n),
          clipDenoised: true,
        });
        const e = relErr(out, load("glide_cfg/samples.npy"));
        out.dispose();
        tc.diagnostic(`glide_cfg samples: max rel err ${e.toExponential(2)}`);
        assert.ok(e <= 1e-4, `glide_cfg samples rel err ${e}`);
      } finally {
        xT.dispose();
        g.dispose();
      }
    } finally {
      unet.dispose();
    }
  });

  test("clip: GLIDE small + noised CLIP, CLIP-guided DDPM (clip_guided/samples)", {
    skip: skipUnless("clip_guided", "glide_small", "clip_small"),
  }, async (tc) => {
    await initEngine("wasm", { quiet: true });
    const m = meta();
    const prompts = m.prompts as string[];
    const unet = new UNet(new Init(0), unetConfigFromMeta(m.small_glide, true));
    const clip = new ClipModel(new Init(0), clipConfigFromOfficial(m.small_clip as Record<string, unknown>));
    try {
      loadOfficial(unet, join(GOLDEN, "weights", "glide_small.safetensors"), "glide-unet");
      loadOfficial(clip, join(GOLDEN, "weights", "clip_small.safetensors"), "glide-clip");
      const d = diffusionOf(m.small_glide);
      const clipTokens = load("clip/text_tokens.npy");
      const lens = Array.from(load("clip/text_lens.npy").data);
      const ctx = clipTokens.shape[1]!;
      const models: GuidanceModels = {
        model: unetModel(unet),
        encode: recordedTokens(prompts, "clip_guided"),
        clip,
        clipText: (asked) =>
          tf.tidy(() => {
            const rows = asked.map((p) => prompts.indexOf(p));
            const ids = Int32Array.from(
              rows.flatMap((r) => Array.from(clipTokens.data.subarray(r * ctx, (r + 1) * ctx))),
            );
            return clip.embedText(
              tf.tensor2d(ids, [rows.length, ctx], "int32") as Tensor2D,
              rows.map((r) => lens[r]!),
            );
          }),
      };
      const g = buildStrategy({ kind: "clip", scale: m.clip_guidance_scale as number }, models).bind(prompts);
      const n = prompts.length;
      const xT = nhwcRows(load("clip_guided/x_T.npy"), n);
      try {
        const out = sampleDdpm(d, g.denoise, xT, {
          noise: replay(load("clip_guided/noise_per_step.npy"), n),
          condFn: g.condFn!,
          clipDenoised: true,
        });
        const e = relErr(out, load("clip_guided/samples.npy"));
        out.dispose();
        tc.diagnostic(`clip_guided samples: max rel err ${e.toExponential(2)}`);
        assert.ok(e <= 1e-4, `clip_guided samples rel err ${e}`);
      } finally {
        xT.dispose();
        g.dispose();
      }
    } finally {
      unet.dispose();
      clip.dispose();
    }
  });

  test("classifier: guided-diffusion small UNet + noised classifier (gd_guided/samples)", {
    skip: skipUnless("gd_guided", "gd_unet_small", "gd_classifier_small"),
  }, async (tc) => {
    await initEngine("wasm", { quiet: true });
    const m = meta();
    const unet = new UNet(new Init(0), unetConfigFromMeta(m.small_gd_model, false));
    const classifier = new EncoderUNet(
      new Init(0),
      classifierConfigFromOfficial(m.small_gd_classifier as Record<string, unknown>),
    );
    try {
      loadOfficial(unet, join(GOLDEN, "weights", "gd_unet_small.safetensors"), "gd-unet");
      loadOfficial(classifier, join(GOLDEN, "weights", "gd_classifier_small.safetensors"), "gd-classifier");
      const d = diffusionOf(m.small_gd_model);
      // The manifest records no labels for this loop; the classifier and UNet sections use y = [1, 207].
      const labels = Array.from(load("gd_classifier/in_y.npy").data);
      const prompts = labels.map((y) => `class ${y}`);
      const label = (p: string) => Number(p.replace(/^class /, ""));
      const models: GuidanceModels = {
        model: unetModel(unet),
        encode: (asked) => ({ y: tf.tensor1d(asked.map(label), "int32") as Tensor1D }),
        classifier,
        classifierLabel: label,
      };
      const g = buildStrategy({ kind: "classifier", scale: m.classifier_scale as number }, models).bind(
        prompts,
      );
      const n = prompts.length;
      const xT = nhwcRows(load("gd_guided/x_T.npy"), n);
      try {
        const out = sampleDdpm(d, g.denoise, xT, {
          noise: replay(load("gd_guided/noise_per_step.npy"), n),
          condFn: g.condFn!,
          clipDenoised: true,
        });
        const e = relErr(out, load("gd_guided/samples.npy"));
        out.dispose();
        tc.diagnostic(`gd_guided samples (y = ${labels.join(", ")}): max rel err ${e.toExponential(2)}`);
        assert.ok(e <= 1e-4, `gd_guided samples rel err ${e}`);
      } finally {
        xT.dispose();
        g.dispose();
      }
    } finally {
      unet.dispose();
      classifier.dispose();
    }
  });
});
