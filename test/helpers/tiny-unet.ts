// The tiny random GLIDE-style UNet the pipeline, strategy and benchmark tests build: 8×8, learned sigma, attention
// at 4×4, one residual block per level, a one-layer text encoder.
import type { UNetConfig } from "../../src/nets/unet.ts";

/** The tiny config with a text encoder over `text.vocabSize` tokens and `text.ctx` positions; `extra` overrides. */
export function tinyUNetConfig(
  text: { vocabSize: number; ctx: number },
  extra: Partial<UNetConfig> = {},
): UNetConfig {
  return {
    imageSize: 8,
    inChannels: 3,
    modelChannels: 32,
    outChannels: 6,
    numResBlocks: 1,
    attentionResolutions: [4],
    channelMult: [1, 2],
    numHeads: 1,
    numHeadChannels: 32,
    numHeadsUpsample: -1,
    useScaleShiftNorm: true,
    resblockUpdown: true,
    useNewAttentionOrder: false,
    text: {
      vocabSize: text.vocabSize,
      ctx: text.ctx,
      width: 32,
      layers: 1,
      heads: 2,
      finalLn: true,
      padding: true,
    },
    ...extra,
  };
}
