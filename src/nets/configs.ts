// The released models' configurations, built from the official flag dictionaries (GLIDE's
// model_and_diffusion_defaults[_upsampler], guided-diffusion's model/classifier flags, GLIDE's clip/config.yaml),
// plus parameter counts computed from shapes alone: the full models hold ~400M parameters, which must not be
// allocated just to check a configuration. The counts mirror the module constructors; test/configs.test.ts ties
// them to real instantiations of small configs and to the official totals.
import { type ClipConfig, GLIDE_CLIP_CONFIG } from "./clip.ts";
import { type EncoderUNetConfig, GD_CLASSIFIER_64 } from "./encoder-unet.ts";
import { type Flags, flag, numbers } from "./flags.ts";
import type { TextTransformerConfig } from "./text-transformer.ts";
import { defaultChannelMult, levelChannels, type UNetConfig, unetInputChannels } from "./unet.ts";

export type { ClipConfig } from "./clip.ts";
export type { EncoderUNetConfig } from "./encoder-unet.ts";
export { GD_CLASSIFIER_64, GLIDE_CLIP_CONFIG };

/** GPT-2's vocabulary, which sizes GLIDE's token embedding. */
export const GLIDE_VOCAB = 50257;

/** GLIDE's model_and_diffusion_defaults() (glide_text2im/model_creation.py): the 64×64 base model. */
export const GLIDE_BASE_FLAGS: Readonly<Flags> = Object.freeze({
  image_size: 64,
  num_channels: 192,
  num_res_blocks: 3,
  channel_mult: "",
  num_heads: 1,
  num_head_channels: 64,
  num_heads_upsample: -1,
  attention_resolutions: "32,16,8",
  dropout: 0.1,
  text_ctx: 128,
  xf_width: 512,
  xf_layers: 16,
  xf_heads: 8,
  xf_final_ln: true,
  xf_padding: true,
  diffusion_steps: 1000,
  noise_schedule: "squaredcos_cap_v2",
  timestep_respacing: "",
  use_scale_shift_norm: true,
  resblock_updown: true,
  use_fp16: true,
  cache_text_emb: false,
  inpaint: false,
  super_res: false,
});

/** model_and_diffusion_defaults_upsampler(): the 64→256 text-conditional upsampler. */
export const GLIDE_UPSAMPLER_FLAGS: Readonly<Flags> = Object.freeze({
  ...GLIDE_BASE_FLAGS,
  image_size: 256,
  num_res_blocks: 2,
  noise_schedule: "linear",
  super_res: true,
});

/**
 * A UNetConfig from GLIDE's flags (also the golden manifest's meta.small_glide). GLIDE always predicts eps and the
 * learned variance range (out_channels 6); in_channels is 3, the inpaint/super_res inputs are concatenated by the UNet.
 * use_fp16 only changes the compute precision of the official code; this port always runs float32.
 */
export function glideConfigFromOfficial(raw: Flags): UNetConfig {
  const what = "GLIDE";
  const unet = unetFromFlags(raw, what, { outChannels: 6, useNewAttentionOrder: false });
  const text: TextTransformerConfig = {
    vocabSize: GLIDE_VOCAB,
    ctx: flag<number>(raw, "text_ctx", "number", what),
    width: flag<number>(raw, "xf_width", "number", what),
    layers: flag<number>(raw, "xf_layers", "number", what),
    heads: flag<number>(raw, "xf_heads", "number", what),
    finalLn: flag<boolean>(raw, "xf_final_ln", "boolean", what),
    padding: flag<boolean>(raw, "xf_padding", "boolean", what),
  };
  return {
    ...unet,
    ...(text.width > 0 ? { text } : {}),
    ...(raw.super_res === true ? { superRes: true } : {}),
    ...(raw.inpaint === true ? { inpaint: true } : {}),
  };
}

/**
 * The UNet flags GLIDE and guided-diffusion share (both create_model signatures; channel_mult "" means the image
 * size's default), with what each fixes differently passed in.
 */
function unetFromFlags(
  raw: Flags,
  what: string,
  o: { outChannels: number; useNewAttentionOrder: boolean },
): UNetConfig {
  const imageSize = flag<number>(raw, "image_size", "number", what);
  const mult = String(raw.channel_mult ?? "");
  if (raw.resblock_updown === false)
    throw new Error(`${what} config: only resblock_updown=True is supported`);
  return {
    imageSize,
    inChannels: 3,
    modelChannels: flag<number>(raw, "num_channels", "number", what),
    outChannels: o.outChannels,
    numResBlocks: flag<number>(raw, "num_res_blocks", "number", what),
    attentionResolutions: numbers(flag<string>(raw, "attention_resolutions", "string", what)),
    channelMult: mult ? numbers(mult) : defaultChannelMult(imageSize),
    numHeads: flag<number>(raw, "num_heads", "number", what),
    numHeadChannels: flag<number>(raw, "num_head_channels", "number", what),
    numHeadsUpsample: flag<number>(raw, "num_heads_upsample", "number", what),
    useScaleShiftNorm: flag<boolean>(raw, "use_scale_shift_norm", "boolean", what),
    resblockUpdown: true,
    useNewAttentionOrder: o.useNewAttentionOrder,
  };
}

/**
 * A UNetConfig from guided-diffusion's model flags (script_util.model_and_diffusion_defaults keys; the golden
 * manifest's meta.small_gd_model): 1000 ImageNet classes when class_cond, 6 output channels when learn_sigma.
 */
export function gdUnetConfigFromOfficial(raw: Flags): UNetConfig {
  return {
    ...unetFromFlags(raw, "guided-diffusion UNet", {
      outChannels: raw.learn_sigma === true ? 6 : 3,
      useNewAttentionOrder: raw.use_new_attention_order === true,
    }),
    ...(raw.class_cond === true ? { numClasses: 1000 } : {}),
  };
}

/** GLIDE (filtered) base, 64×64: 385,030,726 parameters. */
export const GLIDE_BASE: UNetConfig = glideConfigFromOfficial(GLIDE_BASE_FLAGS);
/** GLIDE upsampler, 64→256: 398,361,286 parameters. */
export const GLIDE_UPSAMPLER: UNetConfig = glideConfigFromOfficial(GLIDE_UPSAMPLER_FLAGS);
/** GLIDE base-inpaint: x, image·mask and mask in (3·2+1 input channels). */
export const GLIDE_BASE_INPAINT: UNetConfig = glideConfigFromOfficial({ ...GLIDE_BASE_FLAGS, inpaint: true });
/** GLIDE upsample-inpaint: x, image·mask, mask and the upsampled low-res image (3·3+1 input channels). */
export const GLIDE_UPSAMPLER_INPAINT: UNetConfig = glideConfigFromOfficial({
  ...GLIDE_UPSAMPLER_FLAGS,
  inpaint: true,
});

/** The diffusion each released GLIDE model was trained with (1000 steps; the upsampler uses a linear schedule). */
export const GLIDE_DIFFUSION = {
  base: { schedule: "squaredcos_cap_v2", steps: 1000 },
  upsampler: { schedule: "linear", steps: 1000 },
} as const;

// ------------------------------------------------------------------------ parameter counts from shapes

const linear = (i: number, o: number, bias = true) => i * o + (bias ? o : 0);
const conv = (i: number, o: number, k: number, bias = true) => k * k * i * o + (bias ? o : 0);
const norm = (c: number) => 2 * c;

function resBlockParams(c: number, emb: number, o: number, scaleShift: boolean): number {
  return (
    norm(c) +
    conv(c, o, 3) +
    linear(emb, scaleShift ? 2 * o : o) +
    norm(o) +
    conv(o, o, 3) +
    (o !== c ? conv(c, o, 1) : 0)
  );
}

function attentionParams(c: number, encoderChannels: number | undefined): number {
  return (
    norm(c) + conv(c, 3 * c, 1) + (encoderChannels ? conv(encoderChannels, 2 * c, 1) : 0) + conv(c, c, 1)
  );
}

/** GLIDE's text encoder (token/positional/padding embeddings, blocks, final LN, projection to `embDim`). */
export function textTransformerParamCount(t: TextTransformerConfig, embDim: number): number {
  const w = t.width;
  const block = norm(w) + linear(w, 3 * w) + linear(w, w) + norm(w) + linear(w, 4 * w) + linear(4 * w, w);
  return (
    t.layers * block +
    (t.finalLn ? norm(w) : 0) +
    t.vocabSize * w +
    t.ctx * w +
    (t.padding ? t.ctx * w : 0) +
    linear(w, embDim)
  );
}

/** Parameters of `new UNet(init, config)`, without building it. */
export function unetParamCount(config: UNetConfig): number {
  const mc = config.modelChannels;
  const emb = 4 * mc;
  const ss = config.useScaleShiftNorm;
  const enc = config.text?.width;
  const attnDs = new Set(config.attentionResolutions.map((r) => config.imageSize / r));
  let n = linear(mc, emb) + linear(emb, emb);
  if (config.numClasses !== undefined) n += config.numClasses * emb;
  let ch = levelChannels(config.channelMult[0]!, mc);
  n += conv(unetInputChannels(config), ch, 3);
  const chans = [ch];
  let ds = 1;
  config.channelMult.forEach((mult, level) => {
    for (let i = 0; i < config.numResBlocks; i++) {
      n += resBlockParams(ch, emb, levelChannels(mult, mc), ss);
      ch = levelChannels(mult, mc);
      if (attnDs.has(ds)) n += attentionParams(ch, enc);
      chans.push(ch);
    }
    if (level !== config.channelMult.length - 1) {
      n += resBlockParams(ch, emb, ch, ss);
      chans.push(ch);
      ds *= 2;
    }
  });
  n += 2 * resBlockParams(ch, emb, ch, ss) + attentionParams(ch, enc);
  [...config.channelMult.entries()].reverse().forEach(([level, mult]) => {
    for (let i = 0; i <= config.numResBlocks; i++) {
      n += resBlockParams(ch + chans.pop()!, emb, levelChannels(mult, mc), ss);
      ch = levelChannels(mult, mc);
      if (attnDs.has(ds)) n += attentionParams(ch, enc);
      if (level && i === config.numResBlocks) {
        n += resBlockParams(ch, emb, ch, ss);
        ds /= 2;
      }
    }
  });
  n += norm(ch) + conv(ch, config.outChannels, 3);
  if (config.text) n += textTransformerParamCount(config.text, emb);
  return n;
}

/** Parameters of `new EncoderUNet(init, config)` (guided-diffusion's noised classifier), without building it. */
export function encoderUNetParamCount(config: EncoderUNetConfig): number {
  const mc = config.modelChannels;
  const emb = 4 * mc;
  const ss = config.useScaleShiftNorm;
  const attnDs = new Set(config.attentionResolutions.map((r) => config.imageSize / r));
  let ch = levelChannels(config.channelMult[0]!, mc);
  let n = linear(mc, emb) + linear(emb, emb) + conv(config.inChannels, ch, 3);
  let ds = 1;
  config.channelMult.forEach((mult, level) => {
    for (let i = 0; i < config.numResBlocks; i++) {
      const out = levelChannels(mult, mc);
      n += resBlockParams(ch, emb, out, ss);
      ch = out;
      if (attnDs.has(ds)) n += attentionParams(ch, undefined);
    }
    if (level !== config.channelMult.length - 1) {
      n += resBlockParams(ch, emb, ch, ss);
      ds *= 2;
    }
  });
  n += 2 * resBlockParams(ch, emb, ch, ss) + attentionParams(ch, undefined);
  const spatial = config.imageSize / ds;
  n += norm(ch) + ch * (spatial * spatial + 1) + conv(ch, 3 * ch, 1) + conv(ch, config.outChannels, 1);
  return n;
}

/** Parameters of `new ClipModel(init, config)` (GLIDE's noised CLIP), without building it. */
export function clipParamCount(c: ClipConfig): number {
  const block = (s: number) =>
    norm(s) +
    linear(s, s) +
    linear(s, s, false) +
    linear(s, s) +
    linear(s, s) +
    norm(s) +
    linear(s, 4 * s) +
    linear(4 * s, s);
  const output = (s: number) => norm(s) + linear(s, c.nEmbd, false);
  const st = c.nHeadText * c.nHeadStateText;
  const si = c.nHeadImage * c.nHeadStateImage;
  const patches = (c.imageSize / c.patchSize) ** 2;
  const text = c.nVocab * st + c.maxTextLen * st + c.nXfBlocksText * block(st) + output(st);
  let stemC = 3;
  let stem = 0;
  for (const w of c.convStem ?? []) {
    stem += conv(stemC, w, 3, true);
    stemC = w;
  }
  const image =
    c.nTimesteps * si +
    stem +
    conv(stemC, si, c.patchSize, false) +
    (1 + patches) * si +
    norm(si) +
    c.nXfBlocksImage * block(si) +
    output(si);
  return text + image + 1;
}
