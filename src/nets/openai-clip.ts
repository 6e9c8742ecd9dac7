// OpenAI's CLIP ViT (Radford et al. 2021; the architecture of github.com/openai/CLIP clip/model.py) as an
// evaluation CLIP: GLIDE scored its samples with a public CLIP ViT-B/16 that guidance never saw (Nichol et al. 2021,
// §5.1), so the CLIP score of a guidance strategy is not the score of its own judge. Built from the layer
// primitives; the module tree carries the official parameter names (visual.conv1.weight,
// visual.transformer.resblocks.0.attn.in_proj_weight, ...), so a safetensors file of the official state dict loads
// as is through loadOfficial(..., "openai-clip"), which owns the layout conversion. Images are NHWC in [-1, 1] at
// any size; CLIP's preprocessing (resize, centre crop, normalize) happens inside encodeImage.
import {
  type Tensor,
  type Tensor1D,
  type Tensor2D,
  type Tensor3D,
  type Tensor4D,
  tf,
  type Variable,
} from "../core/engine.ts";
import {
  attention,
  Conv2d,
  Embedding,
  Init,
  LayerNorm,
  Linear,
  Module,
  ModuleList,
  splitHeads,
} from "../core/layers.ts";
import { loadOfficial } from "./convert.ts";
import { readSafetensors } from "./safetensors.ts";
import { ClipTokenizer } from "./tokenizers.ts";

export interface OpenAIClipConfig {
  /** Width of the joint embedding space (text_projection's columns). */
  embedDim: number;
  imageResolution: number;
  visionPatchSize: number;
  visionWidth: number;
  visionLayers: number;
  visionHeads: number;
  contextLength: number;
  vocabSize: number;
  textWidth: number;
  textLayers: number;
  textHeads: number;
}

/** ViT-B/32: the base ViTs differ only in their patch size. */
const VIT_B = {
  embedDim: 512,
  imageResolution: 224,
  visionPatchSize: 32,
  visionWidth: 768,
  visionLayers: 12,
  visionHeads: 12,
  contextLength: 77,
  vocabSize: 49408,
  textWidth: 512,
  textLayers: 12,
  textHeads: 8,
} as const satisfies OpenAIClipConfig;

/** The released ViTs (clip.available_models()); heads are width / 64 as in the official constructor. */
export const OPENAI_CLIP_CONFIGS = {
  "ViT-B/32": VIT_B,
  "ViT-B/16": { ...VIT_B, visionPatchSize: 16 },
  "ViT-L/14": {
    embedDim: 768,
    imageResolution: 224,
    visionPatchSize: 14,
    visionWidth: 1024,
    visionLayers: 24,
    visionHeads: 16,
    contextLength: 77,
    vocabSize: 49408,
    textWidth: 768,
    textLayers: 12,
    textHeads: 12,
  },
} as const satisfies Record<string, OpenAIClipConfig>;

/** GLIDE's evaluation CLIP. */
export const OPENAI_CLIP_VIT_B16: OpenAIClipConfig = OPENAI_CLIP_CONFIGS["ViT-B/16"];

/**
 * Parameter count from the config alone (nothing allocated), logit_scale included. ViT-B/16: 149,620,737, as
 * PyTorch counts the official model (tools/golden/openai_clip.py --counts).
 */
export function openaiClipParamCount(c: OpenAIClipConfig): number {
  // A residual block: in_proj (3w² + 3w), out_proj (w² + w), two LayerNorms (4w), MLP (8w² + 5w).
  const block = (w: number) => 12 * w * w + 13 * w;
  const grid = c.imageResolution / c.visionPatchSize;
  const vw = c.visionWidth;
  const vision =
    3 * c.visionPatchSize ** 2 * vw + // conv1, no bias
    vw + // class_embedding
    (grid * grid + 1) * vw + // positional_embedding
    2 * vw + // ln_pre
    c.visionLayers * block(vw) +
    2 * vw + // ln_post
    vw * c.embedDim; // proj
  const tw = c.textWidth;
  const text = c.vocabSize * tw + c.contextLength * tw + c.textLayers * block(tw) + 2 * tw + tw * c.embedDim;
  return vision + text + 1;
}

/** Heads cannot be read from tensor shapes; the released models use width / 64, which is the default. */
export interface OpenAIClipHeads {
  visionHeads?: number;
  textHeads?: number;
}

type Shapes = ReadonlyMap<string, readonly number[]>;

/**
 * The config of a state dict from its tensor names and shapes, as openai/CLIP's build_model(state_dict) infers it,
 * so ViT-B/32, B/16 and L/14 (and any other ViT) load without naming the variant.
 */
export function openaiClipConfigFromShapes(
  shapes: Shapes | Record<string, readonly number[]>,
  heads: OpenAIClipHeads = {},
  source = "state dict",
): OpenAIClipConfig {
  const sd: Shapes = shapes instanceof Map ? shapes : new Map(Object.entries(shapes));
  const where = `OpenAI CLIP config from ${source}`;
  if (!sd.has("visual.proj")) {
    if ([...sd.keys()].some((k) => k.startsWith("visual.layer1."))) {
      throw new Error(
        `${where}: a ModifiedResNet image tower (RN50, RN101, RN50x4, ...); only the ViTs are supported`,
      );
    }
    throw new Error(`${where}: no tensor 'visual.proj' (not an OpenAI CLIP ViT state dict?)`);
  }
  const shape = (name: string, rank: number): readonly number[] => {
    const s = sd.get(name);
    if (!s) throw new Error(`${where}: missing tensor '${name}'`);
    if (s.length !== rank)
      throw new Error(`${where}: '${name}' has shape [${s.join(", ")}], expected rank ${rank}`);
    return s;
  };
  const conv = shape("visual.conv1.weight", 4);
  const [visionWidth, inChannels, patchH, patchW] = conv as [number, number, number, number];
  if (inChannels !== 3 || patchH !== patchW) {
    throw new Error(
      `${where}: visual.conv1.weight is [${conv.join(", ")}], expected [width, 3, patch, patch]`,
    );
  }
  const nPos = shape("visual.positional_embedding", 2)[0]!;
  const grid = Math.round(Math.sqrt(nPos - 1));
  if (grid * grid + 1 !== nPos) {
    throw new Error(
      `${where}: visual.positional_embedding has ${nPos} rows, not 1 + grid² (class token + patches)`,
    );
  }
  const textWidth = shape("ln_final.weight", 1)[0]!;
  const names = [...sd.keys()];
  const visionLayers = names.filter(
    (k) => k.startsWith("visual.") && k.endsWith(".attn.in_proj_weight"),
  ).length;
  const textLayers = new Set(
    names.filter((k) => k.startsWith("transformer.resblocks.")).map((k) => k.split(".")[2]),
  ).size;
  const headsOf = (width: number, given: number | undefined, key: string): number => {
    const h = given ?? width / 64;
    if (!Number.isInteger(h) || h < 1 || width % h !== 0) {
      throw new Error(
        given === undefined
          ? `${where}: width ${width} is not a multiple of 64, so the heads (width / 64) are unknown; pass ${key}`
          : `${where}: ${key} = ${given} does not divide the width ${width}`,
      );
    }
    return h;
  };
  return {
    embedDim: shape("text_projection", 2)[1]!,
    imageResolution: patchH * grid,
    visionPatchSize: patchH,
    visionWidth,
    visionLayers,
    visionHeads: headsOf(visionWidth, heads.visionHeads, "visionHeads"),
    contextLength: shape("positional_embedding", 2)[0]!,
    vocabSize: shape("token_embedding.weight", 2)[0]!,
    textWidth,
    textLayers,
    textHeads: headsOf(textWidth, heads.textHeads, "textHeads"),
  };
}

/** The config of a safetensors file, from its header alone. */
export function openaiClipConfigFromFile(file: string, heads: OpenAIClipHeads = {}): OpenAIClipConfig {
  const st = readSafetensors(file);
  try {
    return openaiClipConfigFromShapes(new Map(st.names().map((n) => [n, st.info(n).shape])), heads, file);
  } finally {
    st.close();
  }
}

// ------------------------------------------------------------------------------------------------ preprocessing

/** CLIP's Normalize constants (clip.py _transform), on pixels in [0, 1]. */
export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711];

/** PIL's bicubic kernel (a = -0.5, support 2), which CLIP's Resize(BICUBIC) runs on PIL images. */
function bicubic(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/**
 * PIL's resampling weights for one axis (Resample.c precompute_coeffs) as a dense [outSize, inSize] matrix: the
 * kernel is stretched by the scale when downsampling (antialiasing), and each row is normalised to sum to 1.
 */
export function pilBicubicWeights(inSize: number, outSize: number): Float32Array {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 2 * filterScale;
  const out = new Float32Array(outSize * inSize);
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    // PIL rounds the bounds with a C (int) cast, i.e. toward zero.
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
    const w: number[] = [];
    let sum = 0;
    for (let i = lo; i < hi; i++) {
      const v = bicubic((i - center + 0.5) / filterScale);
      w.push(v);
      sum += v;
    }
    for (let i = lo; i < hi; i++) out[o * inSize + i] = sum === 0 ? w[i - lo]! : w[i - lo]! / sum;
  }
  return out;
}

/** Python's round(): half to even (torchvision's CenterCrop offsets use it). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Resamples axis 1 (H) or 2 (W) of NHWC x with the rows [from, from + n) of PIL's weight matrix for inSize → outSize
 * (the crop folded into the resize), then clips to [0, 1] as PIL's 8-bit passes clip to [0, 255].
 */
function resampleAxis(x: Tensor4D, axis: 1 | 2, outSize: number, from: number, n: number): Tensor4D {
  const inSize = x.shape[axis];
  const rows = pilBicubicWeights(inSize, outSize).subarray(from * inSize, (from + n) * inSize);
  // Move the axis last, contract it with the weights, move it back.
  const perm = axis === 2 ? [0, 1, 3, 2] : [0, 2, 3, 1];
  const back = axis === 2 ? [0, 1, 3, 2] : [0, 3, 1, 2];
  const moved = tf.transpose(x, perm);
  const lead = moved.shape.slice(0, 3);
  const flat = tf.reshape(moved, [-1, inSize]) as Tensor2D;
  const y = tf.matMul(flat, tf.tensor2d(rows, [n, inSize]), false, true);
  return tf.clipByValue(tf.transpose(tf.reshape(y, [...lead, n]), back), 0, 1) as Tensor4D;
}

/**
 * CLIP's Resize(n, BICUBIC) + CenterCrop(n) on NHWC pixels in [0, 1]: the shorter side to n (the longer to
 * int(n·long/short), torchvision's rule), then the centred n×n window. PIL's passes run horizontal first, each
 * clipped; the arithmetic is float, without PIL's 8-bit rounding between passes (≤ 1/255 per pixel).
 */
export function clipResizeCrop(pixels: Tensor4D, n: number): Tensor4D {
  const [, h, w] = pixels.shape;
  return tf.tidy(() => {
    let nh = h;
    let nw = w;
    if (Math.min(h, w) !== n) [nh, nw] = h <= w ? [n, Math.trunc((n * w) / h)] : [Math.trunc((n * h) / w), n];
    const top = roundHalfEven((nh - n) / 2);
    const left = roundHalfEven((nw - n) / 2);
    let x = pixels;
    if (nw !== w) x = resampleAxis(x, 2, nw, left, n);
    else if (n !== w) x = tf.slice(x, [0, 0, left, 0], [-1, -1, n, -1]);
    if (nh !== h) x = resampleAxis(x, 1, nh, top, n);
    else if (n !== h) x = tf.slice(x, [0, top, 0, 0], [-1, n, -1, -1]);
    return x === pixels ? tf.clone(x) : x;
  });
}

/** NHWC images in [-1, 1] → CLIP's normalised n×n input (as an 8-bit image would be, pixels clip to [0, 1]). */
export function clipPreprocess(x: Tensor4D, n: number): Tensor4D {
  if (x.shape[3] !== 3) throw new Error(`OpenAI CLIP: expected NHWC RGB images, got [${x.shape.join(", ")}]`);
  return tf.tidy(() => {
    const pixels = tf.clipByValue(tf.div(tf.add(x, 1), 2), 0, 1) as Tensor4D;
    const sized = clipResizeCrop(pixels, n);
    return tf.div(tf.sub(sized, tf.tensor1d(CLIP_MEAN)), tf.tensor1d(CLIP_STD)) as Tensor4D;
  });
}

// ------------------------------------------------------------------------------------------------ modules

/** torch.nn.MultiheadAttention's parameters: the fused in_proj (q, k, v blocks of `width` each) and out_proj. */
class MultiheadAttention extends Module {
  readonly inProjWeight: Variable;
  readonly inProjBias: Variable;
  readonly outProj: Linear;

  constructor(
    init: Init,
    readonly width: number,
    readonly heads: number,
  ) {
    super();
    // Ours is [in, out] like Linear; the official [3w, w] is transposed by the loader.
    this.inProjWeight = this.param("in_proj_weight", init.normal([width, 3 * width], 1 / Math.sqrt(width)));
    this.inProjBias = this.param("in_proj_bias", init.zeros([3 * width]));
    this.outProj = this.child("out_proj", new Linear(init, width, width));
  }

  forward(x: Tensor3D, bias?: Tensor2D): Tensor3D {
    return tf.tidy(() => {
      const [b, t, w] = x.shape;
      const qkv = tf.add(
        tf.matMul(tf.reshape(x, [b * t, w]) as Tensor2D, this.inProjWeight as Tensor2D),
        this.inProjBias,
      );
      const [q, k, v] = splitHeads(tf.reshape(qkv, [b, t, 3 * w]), this.heads, 3, false) as [
        Tensor4D,
        Tensor4D,
        Tensor4D,
      ];
      // softmax(q·kᵀ/√d + mask)·v; attention() splits the 1/√d over q and k, the same product.
      const a = attention(q, k, v, bias);
      return this.outProj.forward(tf.reshape(tf.transpose(a, [0, 2, 1, 3]), [b, t, w])) as Tensor3D;
    });
  }
}

class Mlp extends Module {
  readonly cFc: Linear;
  readonly cProj: Linear;

  constructor(init: Init, width: number) {
    super();
    this.cFc = this.child("c_fc", new Linear(init, width, 4 * width));
    this.cProj = this.child("c_proj", new Linear(init, 4 * width, width));
  }

  forward(x: Tensor): Tensor {
    return tf.tidy(() => {
      const h = this.cFc.forward(x);
      // QuickGELU, x·σ(1.702x): the approximation CLIP was trained with, not the erf GELU.
      return this.cProj.forward(tf.mul(h, tf.sigmoid(tf.mul(h, 1.702))));
    });
  }
}

class ResidualAttentionBlock extends Module {
  readonly attn: MultiheadAttention;
  readonly ln1: LayerNorm;
  readonly mlp: Mlp;
  readonly ln2: LayerNorm;

  constructor(init: Init, width: number, heads: number) {
    super();
    this.attn = this.child("attn", new MultiheadAttention(init, width, heads));
    this.ln1 = this.child("ln_1", new LayerNorm(width));
    this.mlp = this.child("mlp", new Mlp(init, width));
    this.ln2 = this.child("ln_2", new LayerNorm(width));
  }

  forward(x: Tensor3D, bias?: Tensor2D): Tensor3D {
    return tf.tidy(() => {
      const h = tf.add(x, this.attn.forward(this.ln1.forward(x) as Tensor3D, bias));
      return tf.add(h, this.mlp.forward(this.ln2.forward(h))) as Tensor3D;
    });
  }
}

class Transformer extends Module {
  readonly blocks: ResidualAttentionBlock[];

  constructor(init: Init, width: number, layers: number, heads: number) {
    super();
    if (width % heads !== 0)
      throw new Error(`OpenAI CLIP: width ${width} is not divisible by ${heads} heads`);
    this.blocks = Array.from({ length: layers }, () => new ResidualAttentionBlock(init, width, heads));
    this.child("resblocks", new ModuleList(this.blocks));
  }

  forward(x: Tensor3D, bias?: Tensor2D): Tensor3D {
    return tf.tidy(() => {
      let h = x;
      for (const blk of this.blocks) h = blk.forward(h, bias);
      return h;
    });
  }
}

class VisionTransformer extends Module {
  readonly conv1: Conv2d;
  readonly classEmbedding: Variable;
  readonly positionalEmbedding: Variable;
  readonly lnPre: LayerNorm;
  readonly transformer: Transformer;
  readonly lnPost: LayerNorm;
  readonly proj: Variable;

  constructor(
    init: Init,
    readonly c: OpenAIClipConfig,
  ) {
    super();
    const w = c.visionWidth;
    const p = c.visionPatchSize;
    if (c.imageResolution % p !== 0) {
      throw new Error(
        `OpenAI CLIP: resolution ${c.imageResolution} is not a multiple of the patch size ${p}`,
      );
    }
    const grid = c.imageResolution / p;
    const scale = 1 / Math.sqrt(w);
    this.conv1 = this.child("conv1", new Conv2d(init, 3, w, p, { stride: p, padding: "valid", bias: false }));
    this.classEmbedding = this.param("class_embedding", init.normal([w], scale));
    this.positionalEmbedding = this.param("positional_embedding", init.normal([grid * grid + 1, w], scale));
    this.lnPre = this.child("ln_pre", new LayerNorm(w));
    this.transformer = this.child("transformer", new Transformer(init, w, c.visionLayers, c.visionHeads));
    this.lnPost = this.child("ln_post", new LayerNorm(w));
    // Stored [width, embed] and applied as x @ proj, the layout ours already has.
    this.proj = this.param("proj", init.normal([w, c.embedDim], scale));
  }

  /** CLIP-normalised NHWC pixels at the model's resolution → raw image features [B, embedDim]. */
  forward(x: Tensor4D): Tensor2D {
    return tf.tidy(() => {
      const b = x.shape[0];
      const w = this.c.visionWidth;
      // Patches in row-major order, as the official flatten of the [B, width, grid, grid] conv output.
      const patches = tf.reshape(this.conv1.forward(x), [b, -1, w]);
      const cls = tf.broadcastTo(tf.reshape(this.classEmbedding, [1, 1, w]), [b, 1, w]);
      const tokens = tf.add(tf.concat([cls, patches], 1), this.positionalEmbedding);
      const h = this.transformer.forward(this.lnPre.forward(tokens) as Tensor3D);
      const first = tf.reshape(tf.slice(h, [0, 0, 0], [b, 1, w]), [b, w]);
      return tf.matMul(this.lnPost.forward(first) as Tensor2D, this.proj as Tensor2D);
    });
  }
}

function normalize(v: Tensor2D): Tensor2D {
  // The official v / ‖v‖ (no epsilon).
  return tf.div(v, tf.norm(v, "euclidean", -1, true)) as Tensor2D;
}

export type TokenRows = Tensor2D | readonly (readonly number[])[];

export class OpenAIClip extends Module {
  readonly visual: VisionTransformer;
  readonly transformer: Transformer;
  readonly tokenEmbedding: Embedding;
  readonly positionalEmbedding: Variable;
  readonly lnFinal: LayerNorm;
  readonly textProjection: Variable;
  /** log of the logit scale (a 0-d tensor, as the official nn.Parameter(torch.ones([]) * log(1/0.07))). */
  readonly logitScale: Variable;

  constructor(
    init: Init,
    readonly config: OpenAIClipConfig,
  ) {
    super();
    const c = config;
    // Registration order is the official one, so namedParameters() lists the state dict in its order.
    this.visual = this.child("visual", new VisionTransformer(init, c));
    this.transformer = this.child(
      "transformer",
      new Transformer(init, c.textWidth, c.textLayers, c.textHeads),
    );
    this.tokenEmbedding = this.child("token_embedding", new Embedding(init, c.vocabSize, c.textWidth, 0.02));
    this.positionalEmbedding = this.param(
      "positional_embedding",
      init.normal([c.contextLength, c.textWidth], 0.01),
    );
    this.lnFinal = this.child("ln_final", new LayerNorm(c.textWidth));
    this.textProjection = this.param(
      "text_projection",
      init.normal([c.textWidth, c.embedDim], 1 / Math.sqrt(c.textWidth)),
    );
    this.logitScale = this.param("logit_scale", tf.scalar(Math.log(1 / 0.07)));
  }

  /** Raw image features [B, embedDim] of NHWC images in [-1, 1] of any size (CLIP's preprocessing applied). */
  encodeImage(x: Tensor4D): Tensor2D {
    return tf.tidy(() => this.visual.forward(clipPreprocess(x, this.config.imageResolution)));
  }

  /**
   * Raw text features [B, embedDim] of token rows [B, contextLength] ([SOT] + bpe + [EOT], zero padded: the CLIP
   * tokenizer's `tokenize(prompts).tokens`), read at the end token, the largest id of each row.
   */
  encodeText(tokens: TokenRows): Tensor2D {
    const ids = this.checkTokens(tokens);
    return tf.tidy(() => {
      const [b, t] = ids.shape;
      const w = this.config.textWidth;
      const x = tf.add(this.tokenEmbedding.forward(ids), this.positionalEmbedding) as Tensor3D;
      // Causal mask: position q sees keys k ≤ q (the official additive -inf above the diagonal).
      const causal = tf.tensor2d(
        Float32Array.from({ length: t * t }, (_, i) => (i % t > Math.floor(i / t) ? -Infinity : 0)),
        [t, t],
      );
      const h = this.transformer.forward(x, causal);
      const rows = tf.add(tf.argMax(ids, 1), tf.range(0, b * t, t, "int32")) as Tensor1D;
      // LayerNorm is per token, so normalising only the gathered end tokens is the same as ln_final first.
      const eot = tf.gather(tf.reshape(h, [b * t, w]), rows) as Tensor2D;
      return tf.matMul(this.lnFinal.forward(eot) as Tensor2D, this.textProjection as Tensor2D);
    });
  }

  private checkTokens(tokens: TokenRows): Tensor2D {
    const { contextLength: ctx, vocabSize } = this.config;
    const rows = Array.isArray(tokens)
      ? (tokens as readonly (readonly number[])[])
      : ((tokens as Tensor2D).arraySync() as number[][]);
    rows.forEach((r, i) => {
      if (r.length !== ctx)
        throw new Error(`OpenAI CLIP: token row ${i} has ${r.length} ids, expected ${ctx}`);
      const bad = r.find((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
      if (bad !== undefined)
        throw new Error(`OpenAI CLIP: token row ${i} has id ${bad} outside 0..${vocabSize - 1}`);
    });
    if (rows.length === 0) throw new Error("OpenAI CLIP: no token rows");
    return tf.tensor2d(rows.flat(), [rows.length, ctx], "int32");
  }

  /** Unit-norm image embeddings. */
  embedImage(x: Tensor4D): Tensor2D {
    return tf.tidy(() => normalize(this.encodeImage(x)));
  }

  /** Unit-norm text embeddings. */
  embedText(tokens: TokenRows): Tensor2D {
    return tf.tidy(() => normalize(this.encodeText(tokens)));
  }

  /** The official forward: exp(logit_scale)·cos for every (image, text) pair, [images, texts] and its transpose. */
  logits(x: Tensor4D, tokens: TokenRows): { logitsPerImage: Tensor2D; logitsPerText: Tensor2D } {
    return tf.tidy(() => {
      const logitsPerImage = tf.mul(
        tf.exp(this.logitScale),
        tf.matMul(this.embedImage(x), this.embedText(tokens), false, true),
      ) as Tensor2D;
      return { logitsPerImage, logitsPerText: tf.transpose(logitsPerImage) as Tensor2D };
    });
  }

  /** GLIDE's CLIP score of image i against text i: 100·cos(z_image, z_text), [B]. */
  score(x: Tensor4D, tokens: TokenRows): Tensor1D {
    return tf.tidy(() => {
      const zi = this.embedImage(x);
      const zt = this.embedText(tokens);
      if (zi.shape[0] !== zt.shape[0]) {
        throw new Error(`OpenAI CLIP score: ${zi.shape[0]} images for ${zt.shape[0]} token rows`);
      }
      return tf.mul(tf.sum(tf.mul(zi, zt), -1), 100) as Tensor1D;
    });
  }
}

/** Weights that a load overwrites need no random draws (150M normals take seconds in JS). */
class ZeroInit extends Init {
  override normal(shape: number[]): Tensor {
    return tf.zeros(shape, "float32");
  }
}

/**
 * An OpenAI CLIP ViT from a safetensors file of the official state dict (config inferred from the shapes). Throws,
 * naming every missing, unexpected and mis-shaped tensor, when the file does not fit.
 */
export function loadOpenAIClip(file: string, heads: OpenAIClipHeads = {}): OpenAIClip {
  const model = new OpenAIClip(new ZeroInit(0), openaiClipConfigFromFile(file, heads));
  try {
    loadOfficial(model, file, "openai-clip");
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}

/**
 * The evaluation CLIP of a sweep's `evalClipOpenai` entry: the model and CLIP's tokenizer from the user's
 * bpe_simple_vocab_16e6.txt(.gz), `vocab` or else $GUIDANCE_LAB_CLIP_BPE (the vocabulary is not shipped).
 */
export function loadOpenAIEvalClip(spec: { weights: string; vocab?: string }): {
  model: OpenAIClip;
  tokenizer: ClipTokenizer;
} {
  const vocab = spec.vocab ?? process.env.GUIDANCE_LAB_CLIP_BPE;
  if (!vocab) {
    throw new Error(
      "no CLIP vocabulary: give `vocab` (bpe_simple_vocab_16e6.txt.gz from openai/CLIP) or set GUIDANCE_LAB_CLIP_BPE",
    );
  }
  const tokenizer = ClipTokenizer.fromFile(vocab);
  const model = loadOpenAIClip(spec.weights);
  if (tokenizer.nVocab !== model.config.vocabSize) {
    model.dispose();
    throw new Error(
      `${vocab} has ${tokenizer.nVocab} tokens, ${spec.weights} embeds ${model.config.vocabSize}`,
    );
  }
  return { model, tokenizer };
}
