// GLIDE's noised CLIP (glide_text2im/clip): an image encoder that also sees the diffusion timestep, a causal text
// encoder, and the CLIP-guidance gradient d/dx [exp(logit_scale)·Σ z_t·z_i]. The module tree mirrors the official
// one (text_encoder.blocks.block_0.f_attn.f_q, ...); only the leaf names differ (official Affine/LayerNorm use w, b
// and g, b), and glideClipNameMap is the one place that translates them. NHWC images in [-1, 1].
import {
  type Tensor,
  type Tensor1D,
  type Tensor2D,
  type Tensor3D,
  type Tensor4D,
  tf,
  type Variable,
} from "../core/engine.ts";
import { attention, Conv2d, Embedding, gelu, type Init, LayerNorm, Linear, Module } from "../core/layers.ts";
import { Container } from "./container.ts";

/** The text tower and the shared embedding space: what every noised CLIP here has in common. */
export interface ClipTextConfig {
  nVocab: number;
  maxTextLen: number;
  /** Width of the shared embedding space (the output projections). */
  nEmbd: number;
  nHeadStateText: number;
  nHeadText: number;
  nXfBlocksText: number;
  /** exp of the stored logit scale (the official config gives 100, stored as log(100)). */
  logitScale: number;
}

/** GLIDE's noised CLIP: the text tower and a ViT image tower whose first token embeds the timestep. */
export interface ClipConfig extends ClipTextConfig {
  imageSize: number;
  patchSize: number;
  nHeadStateImage: number;
  nHeadImage: number;
  nXfBlocksImage: number;
  /** Number of diffusion timesteps the image encoder has a token for (w_t). */
  nTimesteps: number;
  /**
   * Widths of 3×3 convolution + GELU layers applied before the patch projection (Xiao et al. 2021, "Early
   * convolutions help transformers see better"). Not in GLIDE's released model (absent or empty there). An option
   * for the zoo's small CLIP, whose 4×4 patches must tell apart shapes 5–9 px wide; tried once (models/noised-clip/
   * NOTE.md), not adopted.
   */
  convStem?: readonly number[];
}

/** Builds a ClipConfig from the official config.yaml keys (also the golden manifest's meta.small_clip). */
export function clipConfigFromOfficial(raw: Record<string, unknown>): ClipConfig {
  const num = (key: string): number => {
    const v = raw[key];
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new Error(`CLIP config: '${key}' must be a number, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  return {
    imageSize: num("image_size"),
    patchSize: num("patch_size"),
    nVocab: num("n_vocab"),
    maxTextLen: num("max_text_len"),
    nEmbd: num("n_embd"),
    nHeadStateText: num("n_head_state_text"),
    nHeadText: num("n_head_text"),
    nXfBlocksText: num("n_xf_blocks_text"),
    nHeadStateImage: num("n_head_state_image"),
    nHeadImage: num("n_head_image"),
    nXfBlocksImage: num("n_xf_blocks_image"),
    nTimesteps: num("n_timesteps"),
    logitScale: num("logit_scale"),
  };
}

/** The released noised CLIP (glide_text2im/clip/config.yaml). */
export const GLIDE_CLIP_CONFIG: ClipConfig = clipConfigFromOfficial({
  logit_scale: 100.0,
  n_timesteps: 1000,
  image_size: 64,
  patch_size: 4,
  n_vocab: 65536,
  max_text_len: 77,
  n_embd: 512,
  n_head_state_text: 64,
  n_head_text: 8,
  n_xf_blocks_text: 12,
  n_head_state_image: 64,
  n_head_image: 12,
  n_xf_blocks_image: 12,
});

/**
 * Official parameter name → ours. Official LayerNorms hold g/b and Affines w/b; ours are weight/bias. The tables
 * w_voc and w_t are Embedding modules and patch_proj a Conv2d here, so they gain a ".weight" leaf.
 */
export const glideClipNameMap = {
  toOurs(official: string): string {
    return official
      .replace(/(^|\.)(w_voc|w_t|patch_proj)$/, "$1$2.weight")
      .replace(/\.(g|w)$/, ".weight")
      .replace(/\.b$/, ".bias");
  },
  toOfficial(ours: string): string {
    return ours
      .replace(/(^|\.)(w_voc|w_t|patch_proj)\.weight$/, "$1$2")
      .replace(/(^|\.)ln\.weight$/, "$1ln.g")
      .replace(/(^|\.)ln\.bias$/, "$1ln.b")
      .replace(/\.weight$/, ".w")
      .replace(/\.bias$/, ".b");
  },
};

/** Official contexts are processed in blocks of 32 (a leftover of their block-sparse kernels). */
const BLOCK_SIZE = 32;
const MASKED = -1e10;

export function roundedContext(n: number): number {
  return BLOCK_SIZE * Math.ceil(n / BLOCK_SIZE);
}

/**
 * The official additive attention bias over the context padded to a multiple of 32: 0 where query q may see key k
 * (both real positions, and k ≤ q when causal), -1e10 elsewhere (so pad keys never receive weight).
 */
export function clipAttentionBias(nContext: number, causal: boolean): Float32Array {
  const p = roundedContext(nContext);
  const out = new Float32Array(p * p);
  for (let q = 0; q < p; q++) {
    for (let k = 0; k < p; k++) {
      const ok = q < nContext && k < nContext && (!causal || k <= q);
      out[q * p + k] = ok ? 0 : MASKED;
    }
  }
  return out;
}

class AttentionResblock extends Module {
  readonly ln: LayerNorm;
  readonly fQ: Linear;
  readonly fK: Linear;
  readonly fV: Linear;
  readonly fC: Linear;

  constructor(
    init: Init,
    readonly nState: number,
    readonly nHeads: number,
  ) {
    super();
    this.ln = this.child("ln", new LayerNorm(nState, 1e-5));
    this.fQ = this.child("f_q", new Linear(init, nState, nState));
    // No key bias: a bias on k adds the same logit to every key of a query, which softmax ignores.
    this.fK = this.child("f_k", new Linear(init, nState, nState, { bias: false }));
    this.fV = this.child("f_v", new Linear(init, nState, nState));
    this.fC = this.child("f_c", new Linear(init, nState, nState));
  }

  /** bias: [P, P] over the padded context P ≥ T. */
  forward(m: Tensor3D, bias: Tensor2D): Tensor3D {
    const [b, t] = m.shape;
    const p = bias.shape[0];
    const d = this.nState / this.nHeads;
    const r = this.ln.forward(m);
    // Padding comes after the projections, so pad rows are exact zeros (no bias), as in the official code.
    const heads = (x: Tensor): Tensor4D =>
      tf.transpose(
        tf.reshape(
          tf.pad(x, [
            [0, 0],
            [0, p - t],
            [0, 0],
          ]),
          [b, p, this.nHeads, d],
        ),
        [0, 2, 1, 3],
      );
    const a = attention(
      heads(this.fQ.forward(r)),
      heads(this.fK.forward(r)),
      heads(this.fV.forward(r)),
      bias,
    );
    const merged = tf.slice(
      tf.reshape(tf.transpose(a, [0, 2, 1, 3]), [b, p, this.nState]),
      [0, 0, 0],
      [b, t, -1],
    );
    return tf.add(m, this.fC.forward(merged)) as Tensor3D;
  }
}

class FullyConnectedResblock extends Module {
  readonly ln: LayerNorm;
  readonly f1: Linear;
  readonly f2: Linear;

  constructor(init: Init, nState: number) {
    super();
    this.ln = this.child("ln", new LayerNorm(nState, 1e-5));
    this.f1 = this.child("f_1", new Linear(init, nState, 4 * nState));
    this.f2 = this.child("f_2", new Linear(init, 4 * nState, nState));
  }

  forward(m: Tensor3D): Tensor3D {
    return tf.add(m, this.f2.forward(gelu(this.f1.forward(this.ln.forward(m))))) as Tensor3D;
  }
}

class TransformerBlock extends Module {
  readonly fAttn: AttentionResblock;
  readonly fMlp: FullyConnectedResblock;

  constructor(init: Init, nState: number, nHeads: number) {
    super();
    this.fAttn = this.child("f_attn", new AttentionResblock(init, nState, nHeads));
    this.fMlp = this.child("f_mlp", new FullyConnectedResblock(init, nState));
  }

  forward(x: Tensor3D, bias: Tensor2D): Tensor3D {
    return this.fMlp.forward(this.fAttn.forward(x, bias));
  }
}

/** Final LayerNorm and bias-free projection of one token (official Text/ImageFeatureExtractor). */
class FeatureExtractor extends Module {
  readonly ln: LayerNorm;
  readonly f: Linear;

  constructor(init: Init, nState: number, nEmbd: number) {
    super();
    this.ln = this.child("ln", new LayerNorm(nState, 1e-5));
    this.f = this.child("f", new Linear(init, nState, nEmbd, { bias: false }));
  }

  forward(token: Tensor2D): Tensor2D {
    return this.f.forward(this.ln.forward(token)) as Tensor2D;
  }
}

class TextEmbedding extends Module {
  readonly wVoc: Embedding;
  readonly wPos: Variable;

  constructor(init: Init, nVocab: number, nContext: number, nState: number) {
    super();
    this.wVoc = this.child("w_voc", new Embedding(init, nVocab, nState, 0.02));
    this.wPos = this.param("w_pos", init.normal([nContext, nState], 0.01));
  }

  forward(tokens: Tensor2D): Tensor3D {
    return tf.add(this.wVoc.forward(tokens), this.wPos) as Tensor3D;
  }
}

// CLIP's pixel statistics, applied after mapping [-1, 1] to [0, 255].
const IMAGE_MEANS = [122.77093945, 116.74601272, 104.09373519];
const IMAGE_STDS = [68.50053285, 66.63215831, 70.32316309];

class ImageEmbedding extends Module {
  readonly wT: Embedding;
  readonly stem: Conv2d[];
  readonly patchProj: Conv2d;
  readonly wPos: Variable;
  readonly ln: LayerNorm;

  constructor(
    init: Init,
    readonly imageSize: number,
    readonly patchSize: number,
    readonly nState: number,
    nTimesteps: number,
    convStem: readonly number[],
  ) {
    super();
    if (imageSize % patchSize !== 0) {
      throw new Error(`CLIP: image size ${imageSize} is not a multiple of the patch size ${patchSize}`);
    }
    const nPatch = (imageSize / patchSize) ** 2;
    this.wT = this.child("w_t", new Embedding(init, nTimesteps, nState, 1 / Math.sqrt(nState)));
    let inC = 3;
    this.stem = convStem.map((width, i) => {
      const conv = this.child(`stem_${i}`, new Conv2d(init, inC, width, 3));
      inC = width;
      return conv;
    });
    this.patchProj = this.child(
      "patch_proj",
      new Conv2d(init, inC, nState, patchSize, { stride: patchSize, padding: "valid", bias: false }),
    );
    this.wPos = this.param("w_pos", init.normal([1 + nPatch, nState], 1 / Math.sqrt(nState)));
    this.ln = this.child("ln", new LayerNorm(nState, 1e-5));
  }

  /** pixels: NHWC in [0, 255]; t: original timesteps. Returns [B, 1 + patches, nState]. */
  forward(pixels: Tensor4D, t: Tensor1D): Tensor3D {
    const [b, h, w, c] = pixels.shape;
    if (c !== 3 || h !== this.imageSize || w !== this.imageSize) {
      throw new Error(
        `CLIP image encoder: expected [B, ${this.imageSize}, ${this.imageSize}, 3], got [${pixels.shape.join(", ")}]`,
      );
    }
    if (t.shape[0] !== b) throw new Error(`CLIP image encoder: ${t.shape[0]} timesteps for a batch of ${b}`);
    let x = tf.div(tf.sub(pixels, tf.tensor1d(IMAGE_MEANS)), tf.tensor1d(IMAGE_STDS)) as Tensor4D;
    for (const conv of this.stem) x = gelu(conv.forward(x)) as Tensor4D;
    const patches = tf.reshape(this.patchProj.forward(x), [b, -1, this.nState]);
    const sot = tf.reshape(this.wT.forward(tf.cast(t, "int32")), [b, 1, this.nState]);
    return this.ln.forward(tf.add(tf.concat([sot, patches], 1), this.wPos)) as Tensor3D;
  }
}

/** Blocks + output of one encoder; owns its constant attention bias. */
class EncoderBlocks extends Container {
  readonly blocks: TransformerBlock[] = [];
  readonly output: FeatureExtractor;
  readonly bias: Tensor2D;

  constructor(
    init: Init,
    readonly input: TextEmbedding | ImageEmbedding,
    nState: number,
    nHeads: number,
    nBlocks: number,
    nEmbd: number,
    nContext: number,
    causal: boolean,
  ) {
    super();
    this.add("input", input);
    for (let i = 0; i < nBlocks; i++) {
      this.blocks.push(this.add(`block_${i}`, new TransformerBlock(init, nState, nHeads)));
    }
    this.output = this.add("output", new FeatureExtractor(init, nState, nEmbd));
    const p = roundedContext(nContext);
    this.bias = tf.keep(tf.tensor2d(clipAttentionBias(nContext, causal), [p, p]));
  }

  run(h: Tensor3D): Tensor3D {
    for (const blk of this.blocks) h = blk.forward(h, this.bias);
    return h;
  }

  override dispose(): void {
    this.bias.dispose();
    super.dispose();
  }
}

/**
 * A noised CLIP: GLIDE's causal text tower, an image tower on (x_t, t) chosen by the subclass, a learned logit
 * scale, and the CLIP-guidance gradient. Children are registered text, image, logit scale, as the official module.
 */
export abstract class NoisedClipModel<I extends Module = Module> extends Module {
  readonly config: ClipTextConfig;
  readonly text: EncoderBlocks;
  readonly image: I;
  /** log of the logit scale, as the official model stores it. */
  readonly logitScale: Variable;

  /** `image` adds the image tower's modules to the image_encoder container and returns the tower. */
  constructor(init: Init, config: ClipTextConfig, image: (init: Init, into: Container) => I) {
    super();
    this.config = config;
    const c = config;
    const textState = c.nHeadText * c.nHeadStateText;
    this.text = this.child("text_encoder", new Container()).add(
      "blocks",
      new EncoderBlocks(
        init,
        new TextEmbedding(init, c.nVocab, c.maxTextLen, textState),
        textState,
        c.nHeadText,
        c.nXfBlocksText,
        c.nEmbd,
        c.maxTextLen,
        true,
      ),
    );
    this.image = image(init, this.child("image_encoder", new Container()));
    this.logitScale = this.param("logit_scale", tf.tensor1d([Math.log(c.logitScale)]));
  }

  /** Raw image features [B, nEmbd] of NHWC x in [-1, 1] at original timesteps t. */
  abstract encodeImage(x: Tensor4D, t: Tensor1D): Tensor2D;

  /** Raw text features [B, nEmbd] (official text_encoder(tokens, lens)); tokens [B, maxTextLen], lens ≥ 1. */
  encodeText(tokens: Tensor2D, lens: Tensor1D | number[]): Tensor2D {
    const [b, t] = tokens.shape;
    if (t !== this.config.maxTextLen) {
      throw new Error(
        `CLIP text encoder: tokens have context ${t}, the model expects ${this.config.maxTextLen}`,
      );
    }
    // Lengths given as an int32 tensor stay in the graph (the trainer's losses are pure functions of their input
    // tensors); given as numbers they are checked here.
    if (Array.isArray(lens)) {
      if (lens.length !== b) throw new Error(`CLIP text encoder: ${lens.length} lengths for a batch of ${b}`);
      for (const n of lens) {
        if (!Number.isInteger(n) || n < 1 || n > t)
          throw new Error(`CLIP text encoder: length ${n} outside 1..${t}`);
      }
    } else if (lens.shape[0] !== b) {
      throw new Error(`CLIP text encoder: ${lens.shape[0]} lengths for a batch of ${b}`);
    }
    return tf.tidy(() => {
      const rows = Array.isArray(lens)
        ? tf.tensor1d(
            lens.map((n, i) => i * t + n - 1),
            "int32",
          )
        : tf.add(
            tf.mul(tf.range(0, b, 1, "int32"), tf.scalar(t, "int32")),
            tf.sub(tf.cast(lens as Tensor1D, "int32"), tf.scalar(1, "int32")),
          );
      const input = this.text.input as TextEmbedding;
      const h = this.text.run(input.forward(tf.cast(tokens, "int32")));
      const width = h.shape[2];
      const last = tf.gather(tf.reshape(h, [b * t, width]), rows) as Tensor2D;
      return this.text.output.forward(last);
    });
  }

  /** Unit-norm text embeddings z_t. */
  embedText(tokens: Tensor2D, lens: Tensor1D | number[]): Tensor2D {
    return tf.tidy(() => normalize(this.encodeText(tokens, lens)));
  }

  /** Unit-norm image embeddings z_i. */
  embedImage(x: Tensor4D, t: Tensor1D): Tensor2D {
    return tf.tidy(() => normalize(this.encodeImage(x, t)));
  }

  /**
   * exp(logit_scale)·Σ_b ⟨z_t_b, z_i(x_b, t_b)⟩, the objective of CLIP guidance (GLIDE §2.4 eq. 6); a pure function
   * of its tensors, so src/onnx/guide-grad.ts can trace its gradient.
   */
  similarity(x: Tensor4D, t: Tensor1D, zText: Tensor2D): Tensor {
    return tf.tidy(() =>
      tf.mul(tf.exp(tf.reshape(this.logitScale, [])), tf.sum(tf.mul(zText, this.embedImage(x, t)))),
    );
  }

  /** The CLIP-guidance gradient d/dx [exp(logit_scale)·Σ z_t·z_i]·scale, NHWC like x. */
  condGrad(x: Tensor4D, t: Tensor1D, zText: Tensor2D, scale: number): Tensor4D {
    return tf.tidy(
      () => tf.mul(tf.grad((xv) => this.similarity(xv as Tensor4D, t, zText))(x), scale) as Tensor4D,
    );
  }
}

/** GLIDE's noised CLIP (glide_text2im/clip): the ViT image tower. */
export class ClipModel extends NoisedClipModel<EncoderBlocks> {
  declare readonly config: ClipConfig;

  constructor(init: Init, config: ClipConfig) {
    const c = config;
    const imageState = c.nHeadImage * c.nHeadStateImage;
    const nImageContext = 1 + (c.imageSize / c.patchSize) ** 2;
    super(init, config, (i, into) =>
      into.add(
        "blocks",
        new EncoderBlocks(
          i,
          new ImageEmbedding(i, c.imageSize, c.patchSize, imageState, c.nTimesteps, c.convStem ?? []),
          imageState,
          c.nHeadImage,
          c.nXfBlocksImage,
          c.nEmbd,
          nImageContext,
          false,
        ),
      ),
    );
  }

  /** Raw image features [B, nEmbd] of NHWC x in [-1, 1] at original timesteps t (official image_encoder). */
  override encodeImage(x: Tensor4D, t: Tensor1D): Tensor2D {
    return tf.tidy(() => {
      const input = this.image.input as ImageEmbedding;
      const pixels = tf.mul(tf.add(x, 1), 127.5) as Tensor4D;
      const h = this.image.run(input.forward(pixels, t));
      const [b, , width] = h.shape;
      return this.image.output.forward(tf.reshape(tf.slice(h, [0, 0, 0], [b, 1, width]), [b, width]));
    });
  }
}

/** z = v / (‖v‖ + 1e-12), the official normalisation (not v / max(‖v‖, eps)). */
function normalize(v: Tensor2D): Tensor2D {
  return tf.div(v, tf.add(tf.sqrt(tf.sum(tf.square(v), -1, true)), 1e-12)) as Tensor2D;
}
