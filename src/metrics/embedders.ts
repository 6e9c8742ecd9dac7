// Adapters from the models to the plain arrays the metrics take. Metrics stay pure functions of features so that
// they can be tested with known answers and recomputed from saved features; only these adapters touch tensors.
import { type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../core/engine.ts";
import { PAD_ID, tokenize } from "../data/world.ts";
import { softmaxRows } from "./inception-score.ts";
import { type FeatureSet, rowsOf } from "./linalg.ts";

/** Images (HWC RGB in [0, 1], the data pipeline's format) and texts to embeddings, one row each. */
export interface Embedder {
  images(images: readonly Float32Array[], size: number): FeatureSet;
  texts(texts: readonly string[]): FeatureSet;
}

/** Images to class probabilities, one row each (rows sum to 1). */
export type ClassProbabilities = (images: readonly Float32Array[], size: number) => FeatureSet;

const DEFAULT_BATCH = 64;

/** Run `fn` on NHWC [-1, 1] batches of the images and collect its [B, D] outputs as float32 rows. */
export function mapImageBatches(
  images: readonly Float32Array[],
  size: number,
  fn: (x: Tensor4D) => Tensor2D,
  batchSize = DEFAULT_BATCH,
): Float32Array[] {
  const px = size * size * 3;
  const rows: Float32Array[] = [];
  for (let from = 0; from < images.length; from += batchSize) {
    const chunk = images.slice(from, from + batchSize);
    const buf = new Float32Array(chunk.length * px);
    chunk.forEach((img, i) => {
      if (img.length !== px) throw new Error(`embed: image ${from + i} is not ${size}x${size}x3`);
      for (let k = 0; k < px; k++) buf[i * px + k] = img[k]! * 2 - 1;
    });
    const out = tf.tidy(() => fn(tf.tensor4d(buf, [chunk.length, size, size, 3])));
    const flat = out.dataSync() as Float32Array;
    const dim = out.shape[1];
    out.dispose();
    rows.push(...(rowsOf(flat, dim) as Float32Array[]));
  }
  return rows;
}

function textRows(out: Tensor2D): Float32Array[] {
  const flat = out.dataSync() as Float32Array;
  const dim = out.shape[1];
  out.dispose();
  return rowsOf(flat, dim) as Float32Array[];
}

/** The evaluation CLIP (world vocabulary, `ctx` tokens with a padding mask as in its training). */
export function evalClipEmbedder(
  model: {
    embedImage(x: Tensor4D): Tensor2D;
    embedText(tokens: Tensor2D, mask: Tensor2D): Tensor2D;
  },
  ctx = 16,
  batchSize = DEFAULT_BATCH,
): Embedder {
  return {
    images: (images, size) => mapImageBatches(images, size, (x) => model.embedImage(x), batchSize),
    texts: (texts) => {
      const ids = new Int32Array(texts.length * ctx);
      texts.forEach((t, i) => {
        ids.set(tokenize(t, ctx), i * ctx);
      });
      const mask = Float32Array.from(ids, (id) => (id === PAD_ID ? 0 : 1));
      return textRows(
        tf.tidy(() =>
          model.embedText(
            tf.tensor2d(ids, [texts.length, ctx], "int32") as Tensor2D,
            tf.tensor2d(mask, [texts.length, ctx]) as Tensor2D,
          ),
        ),
      );
    },
  };
}

/**
 * An OpenAI CLIP ViT (src/nets/openai-clip.ts) with CLIP's tokenizer, GLIDE's evaluation CLIP (§5.1). Images go
 * in at any size (the model applies CLIP's resize and normalisation), so the default batch is smaller: ViT-B/16
 * sees 197 tokens of width 768 per image.
 */
export function openaiClipEmbedder(
  model: {
    readonly config: { contextLength: number };
    embedImage(x: Tensor4D): Tensor2D;
    embedText(tokens: readonly (readonly number[])[]): Tensor2D;
  },
  tokenizer: { tokenize(prompts: readonly string[], ctx?: number): { tokens: number[][] } },
  batchSize = 16,
): Embedder {
  return {
    images: (images, size) => mapImageBatches(images, size, (x) => model.embedImage(x), batchSize),
    texts: (texts) => {
      const rows: Float32Array[] = [];
      for (let from = 0; from < texts.length; from += DEFAULT_BATCH) {
        const { tokens } = tokenizer.tokenize(
          texts.slice(from, from + DEFAULT_BATCH),
          model.config.contextLength,
        );
        rows.push(...textRows(model.embedText(tokens)));
      }
      return rows;
    },
  };
}

/**
 * The guidance (noised) CLIP read at t = 0, i.e. as a judge of clean images. `clipText` is the same prompt
 * encoder the CLIP strategy uses (`GuidanceModels.clipText`), so the judged text embeddings are the guided ones.
 */
export function guidanceClipEmbedder(
  clip: { embedImage(x: Tensor4D, t: Tensor1D): Tensor2D },
  clipText: (prompts: readonly string[]) => Tensor2D,
  batchSize = DEFAULT_BATCH,
): Embedder {
  return {
    images: (images, size) =>
      mapImageBatches(
        images,
        size,
        (x) => clip.embedImage(x, tf.zeros([x.shape[0]], "int32") as Tensor1D),
        batchSize,
      ),
    texts: (texts) => textRows(clipText(texts)),
  };
}

/** Class probabilities of the noised classifier at t = 0, for the Inception score. */
export function classifierProbabilities(
  classifier: { logits(x: Tensor4D, t: Tensor1D): Tensor2D },
  batchSize = DEFAULT_BATCH,
): ClassProbabilities {
  return (images, size) =>
    softmaxRows(
      mapImageBatches(
        images,
        size,
        (x) => classifier.logits(x, tf.zeros([x.shape[0]], "int32") as Tensor1D),
        batchSize,
      ),
    );
}
