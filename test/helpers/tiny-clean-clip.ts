// A tiny clean-image CLIP (the evaluation CLIP's architecture) with random weights, for clean-clip guidance tests.
import type { Tensor2D } from "../../src/core/engine.ts";
import { tf } from "../../src/core/engine.ts";
import { Init } from "../../src/core/layers.ts";
import type { EvalClip } from "../../src/nets/eval-clip.ts";
import type { Conditioning } from "../../src/strategies/strategy.ts";
import { buildEvalClip, evalClipModelSchema } from "../../src/train/tasks.ts";

export const TINY_CLEAN_CLIP_CTX = 8;

export function tinyCleanClip(size: number, seed: number): EvalClip {
  const m = evalClipModelSchema.parse({
    modelChannels: 32,
    channelMult: [1, 2],
    numResBlocks: 1,
    attentionResolutions: [],
    numHeadChannels: 32,
    embedDim: 16,
    textCtx: TINY_CLEAN_CLIP_CTX,
    xfWidth: 16,
    xfLayers: 1,
    xfHeads: 2,
  });
  return buildEvalClip(m, size, new Init(seed));
}

/** Text embeddings through a test's own encoder (tokens and mask of TINY_CLEAN_CLIP_CTX columns). */
export function tinyCleanClipText(
  clip: EvalClip,
  prompts: readonly string[],
  encode: (p: readonly string[]) => Conditioning,
): Tensor2D {
  return tf.tidy(() => {
    const c = encode(prompts);
    return clip.embedText(c.tokens as Tensor2D, c.mask as Tensor2D);
  });
}
