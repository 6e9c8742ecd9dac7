// guided-diffusion's EncoderUNetModel with attention pooling: the noised ImageNet classifier used for classifier
// guidance. It is the UNet's encoder half (ResBlock/AttentionBlock from ./unet.ts) followed by GroupNorm, SiLU and
// CLIP-style AttentionPool2d. Parameter names are the official ones, so a checkpoint loads with the identity map.
import {
  type Tensor,
  type Tensor1D,
  type Tensor2D,
  type Tensor4D,
  tf,
  type Variable,
} from "../core/engine.ts";
import {
  attention,
  Conv2d,
  GroupNorm,
  type Init,
  Linear,
  Module,
  silu,
  splitHeads,
  timestepEmbedding,
} from "../core/layers.ts";
import { Container } from "./container.ts";
import { type Flags, flag, numbers } from "./flags.ts";
import {
  AttentionBlock,
  type Block,
  buildEncoderHalf,
  ConvBlock,
  type Ctx,
  defaultChannelMult,
  levelChannels,
  type Sequential,
  type UNetTrunkConfig,
} from "./unet.ts";

/** guided-diffusion's EncoderUNetModel: the UNet trunk, pooled (numHeadChannels must be set: 64 in the release). */
export interface EncoderUNetConfig extends UNetTrunkConfig {
  pool: "attention";
}

/**
 * guided-diffusion's create_classifier from its classifier_* flags (the golden manifest's meta.small_gd_classifier):
 * 1000 ImageNet classes, 64 channels per head, legacy attention order, channel_mult from the image size.
 */
export function classifierConfigFromOfficial(raw: Flags): EncoderUNetConfig {
  const what = "classifier";
  const imageSize = flag<number>(raw, "image_size", "number", what);
  if (flag<boolean>(raw, "classifier_use_fp16", "boolean", what)) {
    throw new Error("classifier config: classifier_use_fp16 is not supported (float32 only)");
  }
  const pool = flag<string>(raw, "classifier_pool", "string", what);
  if (pool !== "attention")
    throw new Error(`classifier config: pool '${pool}' is not supported (only 'attention')`);
  if (!flag<boolean>(raw, "classifier_resblock_updown", "boolean", what)) {
    throw new Error("classifier config: only classifier_resblock_updown=True is supported");
  }
  return {
    imageSize,
    inChannels: 3,
    modelChannels: flag<number>(raw, "classifier_width", "number", what),
    outChannels: 1000,
    numResBlocks: flag<number>(raw, "classifier_depth", "number", what),
    attentionResolutions: numbers(flag<string>(raw, "classifier_attention_resolutions", "string", what)),
    channelMult: defaultChannelMult(imageSize),
    numHeads: 1,
    numHeadChannels: 64,
    useScaleShiftNorm: flag<boolean>(raw, "classifier_use_scale_shift_norm", "boolean", what),
    resblockUpdown: true,
    useNewAttentionOrder: false,
    pool: "attention",
  };
}

/** The released 64×64 ImageNet classifier (64x64_classifier.pt). */
export const GD_CLASSIFIER_64: EncoderUNetConfig = classifierConfigFromOfficial({
  image_size: 64,
  classifier_use_fp16: false,
  classifier_width: 128,
  classifier_depth: 4,
  classifier_attention_resolutions: "32,16,8",
  classifier_use_scale_shift_norm: true,
  classifier_resblock_updown: true,
  classifier_pool: "attention",
});

/**
 * CLIP-style attention pooling: the spatial mean is prepended as a query token, a learned positional embedding
 * [C, HW+1] (official layout) is added, multi-head attention with the NEW qkv order (q|k|v over all channels first,
 * then heads), and the projected output of token 0 is returned.
 */
export class AttentionPool2d extends Module {
  readonly positional: Variable;
  readonly qkvProj: Conv2d;
  readonly cProj: Conv2d;
  readonly heads: number;

  constructor(
    init: Init,
    readonly spatial: number,
    readonly channels: number,
    numHeadChannels: number,
    readonly outChannels: number,
  ) {
    super();
    this.heads = channels / numHeadChannels;
    if (!Number.isInteger(this.heads)) {
      throw new Error(`attention pool: ${channels} channels do not split into heads of ${numHeadChannels}`);
    }
    this.positional = this.param(
      "positional_embedding",
      init.normal([channels, spatial * spatial + 1], 1 / Math.sqrt(channels)),
    );
    this.qkvProj = this.child("qkv_proj", new Conv2d(init, channels, 3 * channels, 1));
    this.cProj = this.child("c_proj", new Conv2d(init, channels, outChannels, 1));
  }

  forward(x: Tensor4D): Tensor2D {
    const [b, h, w, c] = x.shape;
    if (h !== this.spatial || w !== this.spatial || c !== this.channels) {
      throw new Error(
        `attention pool: expected [B, ${this.spatial}, ${this.spatial}, ${this.channels}], got [${x.shape.join(", ")}]`,
      );
    }
    return tf.tidy(() => {
      const l = h * w + 1;
      const ch = c / this.heads;
      const seq = tf.reshape(x, [b, h * w, c]);
      const tokens = tf.add(tf.concat([tf.mean(seq, 1, true), seq], 1), tf.transpose(this.positional));
      const qkv = this.qkvProj.forward(tf.reshape(tokens, [b, 1, l, c]));
      const [q, k, v] = splitHeads(qkv, this.heads, 3, false) as [Tensor4D, Tensor4D, Tensor4D]; // [B, heads, L, ch]
      // Only token 0 is returned, and each query row's attention is independent of the others.
      const q0 = tf.slice(q, [0, 0, 0, 0], [b, this.heads, 1, ch]);
      const a0 = tf.reshape(attention(q0, k, v), [b, 1, 1, c]) as Tensor4D;
      return tf.reshape(this.cProj.forward(a0), [b, this.outChannels]);
    });
  }
}

export class EncoderUNet extends Module {
  readonly config: EncoderUNetConfig;
  readonly timeEmbed0: Linear;
  readonly timeEmbed2: Linear;
  readonly inputBlocks: Block[] = [];
  readonly middle: Sequential;
  readonly outNorm: GroupNorm;
  readonly pool: AttentionPool2d;

  constructor(init: Init, config: EncoderUNetConfig) {
    super();
    this.config = config;
    const mc = config.modelChannels;
    const embDim = 4 * mc;
    const te = this.child("time_embed", new Container());
    this.timeEmbed0 = te.add("0", new Linear(init, mc, embDim));
    this.timeEmbed2 = te.add("2", new Linear(init, embDim, embDim));
    const attn = (c: number) =>
      new AttentionBlock(
        init,
        c,
        config.numHeads,
        config.numHeadChannels,
        config.useNewAttentionOrder,
        undefined,
      );
    const ib = this.child("input_blocks", new Container());
    const addInput = (blk: Block) => this.inputBlocks.push(ib.add(String(this.inputBlocks.length), blk));
    const first = levelChannels(config.channelMult[0]!, mc);
    // The official TimestepEmbedSequential(conv) is a container whose child "0" is the conv: exactly a ConvBlock.
    addInput(new ConvBlock(init, config.inChannels, first));
    const { middle, ch, ds } = buildEncoderHalf(init, config, {
      ch: first,
      attn,
      addInput,
      what: "EncoderUNet",
    });
    this.middle = this.child("middle_block", middle);
    // Official out = Sequential(GroupNorm, SiLU, AttentionPool2d): indices 0 and 2 hold parameters.
    const out = this.child("out", new Container());
    this.outNorm = out.add("0", new GroupNorm(32, ch));
    if (config.imageSize % ds !== 0)
      throw new Error(`EncoderUNet: image size ${config.imageSize} not divisible by ${ds}`);
    this.pool = out.add(
      "2",
      new AttentionPool2d(init, config.imageSize / ds, ch, config.numHeadChannels, config.outChannels),
    );
  }

  /** Class logits [B, outChannels] of NHWC x at (original) timesteps t. */
  logits(x: Tensor4D, t: Tensor1D): Tensor2D {
    return tf.tidy(() => {
      const emb = this.timeEmbed2.forward(
        silu(this.timeEmbed0.forward(timestepEmbedding(t, this.config.modelChannels))),
      ) as Tensor2D;
      const ctx: Ctx = { emb };
      let h = x;
      for (const blk of this.inputBlocks) h = blk.forward(h, ctx);
      h = this.middle.forward(h, ctx);
      return this.pool.forward(silu(this.outNorm.forward(h)));
    });
  }

  /**
   * Σ_b log p(y_b | x_b, t_b) = Σ_b log_softmax(logits_b)[y_b], the objective of classifier guidance (Dhariwal &
   * Nichol 2021, Alg. 1); a pure function of its tensors, so src/onnx/guide-grad.ts can trace its gradient.
   */
  logProb(x: Tensor4D, t: Tensor1D, y: Tensor1D): Tensor {
    return tf.tidy(() => {
      const picked = tf.cast(tf.oneHot(tf.cast(y, "int32"), this.config.outChannels), "float32");
      return tf.sum(tf.mul(tf.logSoftmax(this.logits(x, t)), picked));
    });
  }

  /** Classifier guidance: d/dx Σ_b log_softmax(logits_b)[y_b] · scale, NHWC like x. */
  condGrad(x: Tensor4D, t: Tensor1D, y: Tensor1D, scale: number): Tensor4D {
    return tf.tidy(() => tf.mul(tf.grad((xv) => this.logProb(xv as Tensor4D, t, y))(x), scale) as Tensor4D);
  }
}
