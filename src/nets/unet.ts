// guided-diffusion's UNetModel and GLIDE's Text2ImUNet in one configurable class (NHWC). Parameter names are the
// official ones (input_blocks.1.0.in_layers.2.weight, ...) so a converted official checkpoint loads by name once
// its tensors are transposed to our layouts (see ./convert.ts). The zoo's denoiser is a small config of it.
import { type Tensor1D, type Tensor2D, type Tensor3D, type Tensor4D, tf } from "../core/engine.ts";
import {
  attention,
  avgPool2x,
  Conv2d,
  Embedding,
  GroupNorm,
  type Init,
  Linear,
  Module,
  silu,
  splitHeads,
  timestepEmbedding,
  upsampleNearest2x,
} from "../core/layers.ts";
import { Container } from "./container.ts";
import { identityAttention, type Perturbation, smoothQueries } from "./perturb.ts";
import { TextTransformer, type TextTransformerConfig } from "./text-transformer.ts";

/** What guided-diffusion's UNetModel and EncoderUNetModel (the classifier) are both built from. */
export interface UNetTrunkConfig {
  imageSize: number;
  inChannels: number;
  modelChannels: number;
  outChannels: number;
  numResBlocks: number;
  /** Resolutions (in pixels) at which attention is applied, e.g. [32, 16, 8] for a 64×64 model. */
  attentionResolutions: number[];
  channelMult: number[];
  numHeads: number;
  /** When set (not -1), heads = channels / numHeadChannels (the classifier's attention pooling needs it set). */
  numHeadChannels: number;
  useScaleShiftNorm: boolean;
  resblockUpdown: boolean;
  /** guided-diffusion's QKVAttention (split q|k|v first) vs the legacy per-head layout GLIDE uses. */
  useNewAttentionOrder: boolean;
}

export interface UNetConfig extends UNetTrunkConfig {
  numHeadsUpsample: number;
  numClasses?: number;
  /** GLIDE's text encoder; its width becomes the attention blocks' encoder channels. */
  text?: TextTransformerConfig;
  /**
   * GLIDE's super-resolution models (SuperResText2ImUNet): `cond.lowRes` is upsampled bilinearly to x's size and
   * concatenated after x. inChannels stays the image's channel count (what the model denoises).
   */
  superRes?: boolean;
  /**
   * GLIDE's inpainting models (InpaintText2ImUNet): `cond.inpaintImage`·`cond.inpaintMask` and the mask are
   * concatenated after x (zeros when absent, as in the official forward), before any low-res image.
   */
  inpaint?: boolean;
}

/**
 * A level's width, int(mult · model_channels) as guided-diffusion's and GLIDE's unet.py write it (the 512×512
 * models' first multiplier is 0.5). The input conv and the output head are the first level's width, not mc.
 */
export const levelChannels = (mult: number, modelChannels: number): number =>
  Math.trunc(mult * modelChannels);

/** Channels the first conv sees: x, then [image·mask, mask] when inpainting, then the upsampled low-res image. */
export function unetInputChannels(config: UNetConfig): number {
  const c = config.inChannels;
  return c + (config.inpaint ? c + 1 : 0) + (config.superRes ? c : 0);
}

/** guided-diffusion's default channel multipliers for an image size, used when `channel_mult` is "". */
export function defaultChannelMult(imageSize: number): number[] {
  const table: Record<number, number[]> = {
    512: [0.5, 1, 1, 2, 2, 4, 4],
    256: [1, 1, 2, 2, 4, 4],
    128: [1, 1, 2, 3, 4],
    64: [1, 2, 3, 4],
    32: [1, 2, 2, 2],
  };
  const mult = table[imageSize];
  if (!mult)
    throw new Error(`no default channel_mult for image size ${imageSize}: give channelMult explicitly`);
  return mult;
}

export interface Conditioning {
  /** Per-sample text: token ids [B, ctx] and a mask of real tokens (true) [B, ctx]. */
  tokens?: Tensor2D;
  mask?: Tensor2D;
  /** Class labels [B] for class-conditional models. */
  y?: Tensor1D;
  /** Super-resolution models: the low-resolution image, NHWC [B, h, w, inChannels] in [-1, 1]. */
  lowRes?: Tensor4D;
  /** Inpainting models: the known image, NHWC like x, and the mask of known pixels [B, H, W, 1] (1 = keep). */
  inpaintImage?: Tensor4D;
  inpaintMask?: Tensor4D;
}

export interface Ctx {
  emb: Tensor2D;
  encoderOut?: Tensor3D; // [B, L, xfWidth]
  /** Blocks to perturb and how (perturb.ts), resolved by UNet.resolvePerturbation. */
  perturb?: ResolvedPerturbation;
}

/** A perturbation with its layer names resolved to the UNet's blocks. */
export type ResolvedPerturbation = ReadonlyMap<Block, Perturbation>;

export abstract class Block extends Module {
  abstract forward(x: Tensor4D, ctx: Ctx): Tensor4D;
}

export class ResBlock extends Block {
  readonly inNorm: GroupNorm;
  readonly inConv: Conv2d;
  readonly embLinear: Linear;
  readonly outNorm: GroupNorm;
  readonly outConv: Conv2d;
  readonly skip?: Conv2d;

  constructor(
    init: Init,
    channels: number,
    embChannels: number,
    readonly outChannels: number,
    readonly useScaleShiftNorm: boolean,
    readonly updown: "up" | "down" | undefined,
  ) {
    super();
    // Official layout: in_layers = [GroupNorm, SiLU, conv], emb_layers = [SiLU, linear], out_layers = [GroupNorm, SiLU, Dropout, conv].
    const inLayers = this.child("in_layers", new Container());
    this.inNorm = inLayers.add("0", new GroupNorm(32, channels));
    this.inConv = inLayers.add("2", new Conv2d(init, channels, outChannels, 3, { padding: 1 }));
    const embLayers = this.child("emb_layers", new Container());
    this.embLinear = embLayers.add(
      "1",
      new Linear(init, embChannels, useScaleShiftNorm ? 2 * outChannels : outChannels),
    );
    const outLayers = this.child("out_layers", new Container());
    this.outNorm = outLayers.add("0", new GroupNorm(32, outChannels));
    this.outConv = outLayers.add("3", new Conv2d(init, outChannels, outChannels, 3, { padding: 1 }));
    if (outChannels !== channels)
      this.skip = this.child("skip_connection", new Conv2d(init, channels, outChannels, 1));
  }

  forward(x: Tensor4D, ctx: Ctx): Tensor4D {
    let h = silu(this.inNorm.forward(x)) as Tensor4D;
    // Resampling comes after norm+SiLU and before the conv, applied to both branches (README of the golden set).
    if (this.updown === "up") {
      h = upsampleNearest2x(h);
      x = upsampleNearest2x(x);
    } else if (this.updown === "down") {
      h = avgPool2x(h);
      x = avgPool2x(x);
    }
    h = this.inConv.forward(h);
    const e = this.embLinear.forward(silu(ctx.emb)) as Tensor2D;
    const b = e.shape[0];
    if (this.useScaleShiftNorm) {
      const [scale, shift] = tf.split(e, 2, 1) as [Tensor2D, Tensor2D];
      const s = tf.reshape(scale, [b, 1, 1, this.outChannels]);
      const t = tf.reshape(shift, [b, 1, 1, this.outChannels]);
      h = tf.add(tf.mul(this.outNorm.forward(h), tf.add(s, 1)), t);
    } else {
      h = this.outNorm.forward(tf.add(h, tf.reshape(e, [b, 1, 1, this.outChannels])));
    }
    h = this.outConv.forward(silu(h) as Tensor4D);
    return tf.add(this.skip ? this.skip.forward(x) : x, h);
  }
}

export class AttentionBlock extends Block {
  readonly norm: GroupNorm;
  readonly qkv: Conv2d;
  readonly encoderKv?: Conv2d;
  readonly projOut: Conv2d;
  readonly heads: number;

  constructor(
    init: Init,
    readonly channels: number,
    numHeads: number,
    numHeadChannels: number,
    readonly newOrder: boolean,
    encoderChannels: number | undefined,
  ) {
    super();
    this.heads = numHeadChannels === -1 ? numHeads : channels / numHeadChannels;
    if (!Number.isInteger(this.heads) || channels % this.heads !== 0) {
      throw new Error(
        `attention: ${channels} channels do not split into heads of ${numHeadChannels} channels`,
      );
    }
    this.norm = this.child("norm", new GroupNorm(32, channels));
    // The official 1-D 1×1 convs are stored as 1×1 conv2d filters so that a converted checkpoint maps one to one.
    this.qkv = this.child("qkv", new Conv2d(init, channels, 3 * channels, 1));
    if (encoderChannels !== undefined) {
      this.encoderKv = this.child("encoder_kv", new Conv2d(init, encoderChannels, 2 * channels, 1));
    }
    this.projOut = this.child("proj_out", new Conv2d(init, channels, channels, 1));
  }

  forward(x: Tensor4D, ctx: Ctx): Tensor4D {
    const [b, hgt, wid, c] = x.shape;
    const qkv = this.qkv.forward(this.norm.forward(x));
    // Legacy layout: per head, q|k|v consecutive blocks of `ch`; new layout: q|k|v over all channels, then heads.
    const [q, k0, v0] = splitHeads(qkv, this.heads, 3, !this.newOrder) as [Tensor4D, Tensor4D, Tensor4D];
    let k = k0;
    let v = v0;
    if (this.encoderKv && ctx.encoderOut) {
      const l = ctx.encoderOut.shape[1];
      const e = this.encoderKv.forward(tf.reshape(ctx.encoderOut, [b, 1, l, ctx.encoderOut.shape[2]]));
      const [ek, ev] = splitHeads(e, this.heads, 2, true) as [Tensor4D, Tensor4D];
      // Text tokens come FIRST among the keys, as in GLIDE.
      k = tf.concat([ek, k], 2);
      v = tf.concat([ev, v], 2);
    }
    const p = ctx.perturb?.get(this);
    const text = k.shape[2] - q.shape[2];
    const attended =
      p?.op === "identity-attention"
        ? identityAttention(q, k, v, text)
        : attention(p?.op === "smoothed-queries" ? smoothQueries(q, hgt, wid, p.sigma!) : q, k, v);
    const a = tf.reshape(tf.transpose(attended, [0, 2, 1, 3]), [b, hgt, wid, c]) as Tensor4D;
    return tf.add(x, this.projOut.forward(a));
  }
}

export class ConvBlock extends Block {
  readonly conv: Conv2d;
  constructor(init: Init, inC: number, outC: number) {
    super();
    this.conv = this.child("0", new Conv2d(init, inC, outC, 3, { padding: 1 }));
  }
  forward(x: Tensor4D): Tensor4D {
    return this.conv.forward(x);
  }
}

/** TimestepEmbedSequential: children named "0", "1", ... as in the official ModuleList. */
export class Sequential extends Block {
  readonly blocks: Block[] = [];
  push(b: Block): void {
    this.blocks.push(this.child(String(this.blocks.length), b));
  }
  forward(x: Tensor4D, ctx: Ctx): Tensor4D {
    for (const b of this.blocks) if (ctx.perturb?.get(b)?.op !== "skip") x = b.forward(x, ctx);
    return x;
  }
}

/** Whether a block's output has its input's shape (so that skipping it is defined). */
export const shapePreserving = (b: Block): boolean =>
  b instanceof AttentionBlock || (b instanceof ResBlock && !b.updown && !b.skip);

/**
 * guided-diffusion's encoder half, built alike by UNetModel and EncoderUNetModel: per level of channelMult,
 * numResBlocks ResBlocks to int(mult·mc) channels, each followed by attention at the attention resolutions, and a
 * down-sampling ResBlock between levels; then the middle block (ResBlock, attention, ResBlock). Each input block
 * after the first (the caller's convolution, `ch` channels wide) goes to `addInput` in order. Returns the middle
 * block for the caller to attach as `middle_block`, the width after each input block including the first (the
 * skips' widths), the final width and the final downsampling factor.
 */
export function buildEncoderHalf(
  init: Init,
  config: UNetTrunkConfig,
  o: { ch: number; attn: (ch: number) => AttentionBlock; addInput: (s: Sequential) => void; what: string },
): { middle: Sequential; chans: number[]; ch: number; ds: number } {
  const mc = config.modelChannels;
  const embDim = 4 * mc;
  const ss = config.useScaleShiftNorm;
  const attnDs = new Set(config.attentionResolutions.map((r) => config.imageSize / r));
  const chans = [o.ch];
  let ch = o.ch;
  let ds = 1;
  config.channelMult.forEach((mult, level) => {
    for (let i = 0; i < config.numResBlocks; i++) {
      const s = new Sequential();
      const out = levelChannels(mult, mc);
      s.push(new ResBlock(init, ch, embDim, out, ss, undefined));
      ch = out;
      if (attnDs.has(ds)) s.push(o.attn(ch));
      o.addInput(s);
      chans.push(ch);
    }
    if (level !== config.channelMult.length - 1) {
      if (!config.resblockUpdown) throw new Error(`${o.what}: only resblock_updown=True is supported`);
      const s = new Sequential();
      s.push(new ResBlock(init, ch, embDim, ch, ss, "down"));
      o.addInput(s);
      chans.push(ch);
      ds *= 2;
    }
  });
  const middle = new Sequential();
  middle.push(new ResBlock(init, ch, embDim, ch, ss, undefined));
  middle.push(o.attn(ch));
  middle.push(new ResBlock(init, ch, embDim, ch, ss, undefined));
  return { middle, chans, ch, ds };
}

export class UNet extends Module {
  readonly config: UNetConfig;
  readonly timeEmbed0: Linear;
  readonly timeEmbed2: Linear;
  readonly labelEmb?: Embedding;
  readonly text?: TextTransformer;
  readonly inputBlocks: Sequential[] = [];
  readonly middle: Sequential;
  readonly outputBlocks: Sequential[] = [];
  readonly outNorm: GroupNorm;
  readonly outConv: Conv2d;

  constructor(init: Init, config: UNetConfig) {
    super();
    this.config = config;
    const mc = config.modelChannels;
    const embDim = 4 * mc;
    const attnDs = new Set(config.attentionResolutions.map((r) => config.imageSize / r));
    const encCh = config.text?.width;
    const te = this.child("time_embed", new Container());
    this.timeEmbed0 = te.add("0", new Linear(init, mc, embDim));
    this.timeEmbed2 = te.add("2", new Linear(init, embDim, embDim));
    if (config.numClasses !== undefined) {
      this.labelEmb = this.child("label_emb", new Embedding(init, config.numClasses, embDim, 1));
    }
    const attn = (ch: number, heads: number) =>
      new AttentionBlock(init, ch, heads, config.numHeadChannels, config.useNewAttentionOrder, encCh);
    const ib = this.child("input_blocks", new Container());
    const addInput = (s: Sequential) => this.inputBlocks.push(ib.add(String(this.inputBlocks.length), s));
    // guided-diffusion: ch = input_ch = int(channel_mult[0] * model_channels); the output head's conv reads input_ch.
    const inputCh = levelChannels(config.channelMult[0]!, mc);
    const first = new Sequential();
    first.push(new ConvBlock(init, unetInputChannels(config), inputCh));
    addInput(first);
    const half = buildEncoderHalf(init, config, {
      ch: inputCh,
      attn: (c) => attn(c, config.numHeads),
      addInput,
      what: "UNet",
    });
    this.middle = this.child("middle_block", half.middle);
    const chans = half.chans;
    let ch = half.ch;
    let ds = half.ds;
    const ob = this.child("output_blocks", new Container());
    const upHeads = config.numHeadsUpsample === -1 ? config.numHeads : config.numHeadsUpsample;
    [...config.channelMult.entries()].reverse().forEach(([level, mult]) => {
      for (let i = 0; i <= config.numResBlocks; i++) {
        const ich = chans.pop()!;
        const s = new Sequential();
        s.push(
          new ResBlock(init, ch + ich, embDim, levelChannels(mult, mc), config.useScaleShiftNorm, undefined),
        );
        ch = levelChannels(mult, mc);
        if (attnDs.has(ds)) s.push(attn(ch, upHeads));
        if (level && i === config.numResBlocks) {
          s.push(new ResBlock(init, ch, embDim, ch, config.useScaleShiftNorm, "up"));
          ds /= 2;
        }
        this.outputBlocks.push(ob.add(String(this.outputBlocks.length), s));
      }
    });
    // ch is the first level's width again: the official head, normalization(ch) then conv_nd(input_ch, ...).
    const out = this.child("out", new Container());
    this.outNorm = out.add("0", new GroupNorm(32, ch));
    this.outConv = out.add("2", new Conv2d(init, ch, config.outChannels, 3, { padding: 1 }));
    if (config.text) this.text = this.child("text", new TextTransformer(init, config.text, embDim));
  }

  /** Time (and class or text) embedding; also the text encoder's per-token output for attention. */
  embed(t: Tensor1D, cond: Conditioning): Ctx {
    const mc = this.config.modelChannels;
    let emb = this.timeEmbed2.forward(silu(this.timeEmbed0.forward(timestepEmbedding(t, mc)))) as Tensor2D;
    if (this.labelEmb) {
      if (!cond.y) throw new Error("this UNet is class-conditional: pass class labels `y`");
      emb = tf.add(emb, this.labelEmb.forward(tf.cast(cond.y, "int32")) as Tensor2D);
    }
    if (this.text) {
      if (!cond.tokens || !cond.mask)
        throw new Error("this UNet is text-conditional: pass `tokens` and `mask`");
      const { xfProj, xfOut } = this.text.encode(cond.tokens, cond.mask);
      return { emb: tf.add(emb, xfProj), encoderOut: xfOut };
    }
    return { emb };
  }

  /**
   * Returns NHWC [B, H, W, outChannels]: eps (and the learned-range variance values when outChannels = 2·in).
   * `perturb` (from resolvePerturbation) degrades chosen blocks, for PAG / SEG / skip-layer guidance.
   */
  forward(x: Tensor4D, t: Tensor1D, cond: Conditioning = {}, perturb?: ResolvedPerturbation): Tensor4D {
    const ctx = this.embed(t, cond);
    if (perturb) ctx.perturb = perturb;
    return this.forwardWith(this.modelInput(x, cond), ctx);
  }

  /** Every block by its checkpoint path ("input_blocks.4.1", "middle_block.1", "output_blocks.3.0", …). */
  blocksByPath(): Map<string, Block> {
    const out = new Map<string, Block>();
    const add = (prefix: string, s: Sequential) => {
      for (const [j, b] of s.blocks.entries()) out.set(`${prefix}.${j}`, b);
    };
    for (const [i, s] of this.inputBlocks.entries()) add(`input_blocks.${i}`, s);
    add("middle_block", this.middle);
    for (const [i, s] of this.outputBlocks.entries()) add(`output_blocks.${i}`, s);
    return out;
  }

  /**
   * The blocks a perturbation names, checked: unknown paths, attention operations on non-attention blocks and
   * skips of shape-changing blocks are errors that name the layer and list the valid ones.
   */
  resolvePerturbation(p: Perturbation): ResolvedPerturbation {
    const blocks = this.blocksByPath();
    const valid = (b: Block) => (p.op === "skip" ? shapePreserving(b) : b instanceof AttentionBlock);
    const names = [...blocks].filter(([, b]) => valid(b)).map(([n]) => n);
    if (p.layers.length === 0) throw new Error(`perturbation ${p.op}: layers: empty`);
    if (p.op === "smoothed-queries" && !(p.sigma !== undefined && p.sigma > 0)) {
      throw new Error(`perturbation smoothed-queries: sigma: expected > 0, got ${p.sigma}`);
    }
    const out = new Map<Block, Perturbation>();
    for (const layer of p.layers) {
      const b = blocks.get(layer);
      if (!b || !valid(b)) {
        const what = p.op === "skip" ? "a block that keeps its input's shape" : "an attention block";
        throw new Error(
          `perturbation ${p.op}: layers: '${layer}' is not ${what} of this UNet (valid: ${names.join(", ")})`,
        );
      }
      out.set(b, p);
    }
    return out;
  }

  /** x with the inpainting and super-resolution inputs concatenated (x itself for plain models). */
  modelInput(x: Tensor4D, cond: Conditioning = {}): Tensor4D {
    const { inpaint, superRes } = this.config;
    if (!inpaint && !superRes) return x;
    const [b, h, w, c] = x.shape;
    const parts: Tensor4D[] = [x];
    if (inpaint) {
      const mask = cond.inpaintMask ?? tf.zeros([b, h, w, 1]);
      const image = cond.inpaintImage ?? tf.zeros([b, h, w, c]);
      if (mask.shape[3] !== 1 || mask.shape[1] !== h || mask.shape[2] !== w) {
        throw new Error(`inpainting: mask must be [B, ${h}, ${w}, 1], got [${mask.shape.join(", ")}]`);
      }
      parts.push(tf.mul(image, mask), mask);
    }
    if (superRes) {
      if (!cond.lowRes)
        throw new Error("this UNet is a super-resolution model: pass the low-res image `lowRes`");
      // align_corners=False in PyTorch is TF's half-pixel-centres resize.
      parts.push(tf.image.resizeBilinear(cond.lowRes, [h, w], false, true));
    }
    return tf.concat(parts, 3);
  }

  forwardWith(x: Tensor4D, ctx: Ctx, onActivation?: (name: string, h: Tensor4D) => void): Tensor4D {
    const hs: Tensor4D[] = [];
    let h = x;
    this.inputBlocks.forEach((m, i) => {
      h = m.forward(h, ctx);
      onActivation?.(`input_blocks.${String(i).padStart(2, "0")}`, h);
      hs.push(h);
    });
    h = this.middle.forward(h, ctx);
    onActivation?.("middle_block", h);
    this.outputBlocks.forEach((m, i) => {
      h = m.forward(tf.concat([h, hs.pop()!], 3), ctx);
      onActivation?.(`output_blocks.${String(i).padStart(2, "0")}`, h);
    });
    return this.outConv.forward(silu(this.outNorm.forward(h)) as Tensor4D);
  }
}
