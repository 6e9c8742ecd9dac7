// The zoo's noised CLIP with a convolutional image tower: guided-diffusion's timestep-conditioned EncoderUNet with
// attention pooling (the noised classifier's architecture) projecting to the shared embedding space, beside GLIDE's
// causal text tower. GLIDE's ViT tower (./clip.ts) cut the zoo's 32×32 renders into 4×4 patches and never learned to
// tell circles from squares (they are 5–9 px across; models/noised-clip/NOTE.md); convolutions see the corners.
import type { Tensor1D, Tensor2D, Tensor4D } from "../core/engine.ts";
import type { Init } from "../core/layers.ts";
import { type ClipTextConfig, NoisedClipModel } from "./clip.ts";
import { EncoderUNet, type EncoderUNetConfig } from "./encoder-unet.ts";

export interface ConvClipConfig extends ClipTextConfig {
  /** The image tower; its output width is nEmbd. */
  image: Omit<EncoderUNetConfig, "outChannels">;
}

export class ConvClip extends NoisedClipModel<EncoderUNet> {
  declare readonly config: ConvClipConfig;

  constructor(init: Init, config: ConvClipConfig) {
    super(init, config, (i, into) =>
      into.add("unet", new EncoderUNet(i, { ...config.image, outChannels: config.nEmbd })),
    );
  }

  /** Image features [B, nEmbd] of NHWC x in [-1, 1] at original timesteps t. */
  override encodeImage(x: Tensor4D, t: Tensor1D): Tensor2D {
    return this.image.logits(x, t);
  }
}
