// GLIDE's text encoder (glide_text2im/xf.py + Text2ImUNet.get_text_emb): token + positional embedding, padded
// positions replaced by a learned padding embedding, pre-LN transformer blocks with no attention mask, a final
// LayerNorm, and a projection of the LAST position into the UNet's embedding. Names follow the official module tree.
import { type Tensor2D, type Tensor3D, type Tensor4D, tf, type Variable } from "../core/engine.ts";
import {
  attention,
  Embedding,
  gelu,
  type Init,
  LayerNorm,
  Linear,
  Module,
  splitHeads,
} from "../core/layers.ts";
import { Container } from "./container.ts";

export interface TextTransformerConfig {
  vocabSize: number;
  /** Context length (GLIDE: 128); prompts are padded to it. */
  ctx: number;
  width: number;
  layers: number;
  heads: number;
  finalLn: boolean;
  /** GLIDE's xf_padding: replace padded positions by `padding_embedding`. */
  padding: boolean;
}

class ResidualAttentionBlock extends Module {
  readonly ln1: LayerNorm;
  readonly cQkv: Linear;
  readonly attnProj: Linear;
  readonly ln2: LayerNorm;
  readonly cFc: Linear;
  readonly mlpProj: Linear;

  constructor(
    init: Init,
    width: number,
    readonly heads: number,
  ) {
    super();
    const attn = this.child("attn", new Container());
    this.cQkv = attn.add("c_qkv", new Linear(init, width, 3 * width));
    this.attnProj = attn.add("c_proj", new Linear(init, width, width));
    this.ln1 = this.child("ln_1", new LayerNorm(width));
    const mlp = this.child("mlp", new Container());
    this.cFc = mlp.add("c_fc", new Linear(init, width, 4 * width));
    this.mlpProj = mlp.add("c_proj", new Linear(init, 4 * width, width));
    this.ln2 = this.child("ln_2", new LayerNorm(width));
  }

  forward(x: Tensor3D): Tensor3D {
    const [b, t, w] = x.shape;
    // The fused qkv output is viewed [B, T, heads, 3c] and split per head into q|k|v.
    const qkv = this.cQkv.forward(this.ln1.forward(x));
    const [q, k, v] = splitHeads(qkv, this.heads, 3, true) as [Tensor4D, Tensor4D, Tensor4D];
    const a = tf.reshape(tf.transpose(attention(q, k, v), [0, 2, 1, 3]), [b, t, w]);
    x = tf.add(x, this.attnProj.forward(a));
    const m = this.mlpProj.forward(gelu(this.cFc.forward(this.ln2.forward(x))));
    return tf.add(x, m) as Tensor3D;
  }
}

export class TextTransformer extends Module {
  readonly tokenEmbedding: Embedding;
  readonly positional: Variable;
  readonly paddingEmbedding?: Variable;
  readonly blocks: ResidualAttentionBlock[] = [];
  readonly finalLn?: LayerNorm;
  readonly proj: Linear;

  constructor(
    init: Init,
    readonly config: TextTransformerConfig,
    embDim: number,
  ) {
    super();
    const { width, ctx } = config;
    const resblocks = this.child("transformer", new Container()).add("resblocks", new Container());
    for (let i = 0; i < config.layers; i++) {
      this.blocks.push(resblocks.add(String(i), new ResidualAttentionBlock(init, width, config.heads)));
    }
    if (config.finalLn) this.finalLn = this.child("final_ln", new LayerNorm(width));
    this.tokenEmbedding = this.child("token_embedding", new Embedding(init, config.vocabSize, width, 0.02));
    this.positional = this.param("positional_embedding", init.normal([ctx, width], 0.01));
    if (config.padding)
      this.paddingEmbedding = this.param("padding_embedding", init.normal([ctx, width], 0.01));
    this.proj = this.child("transformer_proj", new Linear(init, width, embDim));
  }

  /** tokens, mask: [B, ctx] (mask 1 on real tokens). Returns xfProj [B, embDim] and xfOut [B, ctx, width]. */
  encode(tokens: Tensor2D, mask: Tensor2D): { xfProj: Tensor2D; xfOut: Tensor3D } {
    const [b, t] = tokens.shape;
    if (t !== this.config.ctx) {
      throw new Error(`text encoder: tokens have context ${t}, the model expects ${this.config.ctx}`);
    }
    let x = tf.add(this.tokenEmbedding.forward(tf.cast(tokens, "int32")), this.positional) as Tensor3D;
    if (this.paddingEmbedding) {
      const m = tf.reshape(tf.cast(mask, "bool"), [b, t, 1]);
      x = tf.where(m, x, tf.broadcastTo(this.paddingEmbedding, [b, t, this.config.width])) as Tensor3D;
    }
    for (const blk of this.blocks) x = blk.forward(x);
    if (this.finalLn) x = this.finalLn.forward(x) as Tensor3D;
    const last = tf.reshape(tf.slice(x, [0, t - 1, 0], [b, 1, this.config.width]), [b, this.config.width]);
    return { xfProj: this.proj.forward(last) as Tensor2D, xfOut: x };
  }
}
