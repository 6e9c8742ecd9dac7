// CLIP score, GLIDE's fidelity-to-prompt axis (Fig. 6c): 100·cos(z_image, z_text), averaged over images.
// torchmetrics' CLIPScore clamps the mean, max(mean 100·cos, 0), and is reported beside it so that numbers compare
// with either convention. Scores come from whichever embedder the caller passes: the evaluation CLIP (never seen by
// guidance) gives the honest number; the guidance CLIP at t = 0 shows how far CLIP guidance optimises its own
// judge, GLIDE's "adversarial examples" effect (§4.1), as the gap between the two.
import { cosine, type FeatureSet, type Vector } from "./linalg.ts";

export interface ClipScore {
  /** GLIDE: mean of 100·cos. */
  score: number;
  /** torchmetrics' CLIPScore: max(mean of 100·cos, 0). */
  torchmetrics: number;
  /** 100·cos per image, in input order. */
  perImage: number[];
}

/**
 * CLIP score of image embeddings against text embeddings. `texts` holds one embedding per image, or a single
 * embedding shared by all images. Embeddings need not be unit-norm: cos normalises.
 */
export function clipScore(images: FeatureSet, texts: FeatureSet): ClipScore {
  if (images.length === 0) throw new Error("clip score: no images");
  if (texts.length !== images.length && texts.length !== 1) {
    throw new Error(`clip score: ${texts.length} text embeddings for ${images.length} images`);
  }
  const perImage = images.map((z, i) => {
    const t: Vector = texts.length === 1 ? texts[0]! : texts[i]!;
    if (t.length !== z.length) throw new Error(`clip score: image ${i} and its text differ in dimension`);
    return 100 * cosine(z, t);
  });
  const score = perImage.reduce((a, b) => a + b, 0) / perImage.length;
  return { score, torchmetrics: Math.max(score, 0), perImage };
}
