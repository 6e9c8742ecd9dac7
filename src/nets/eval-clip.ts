// The evaluation CLIP: a contrastive image/text model trained on CLEAN images only, of another architecture than
// the noised CLIP used for guidance (a convolutional image tower with attention pooling instead of a ViT), so
// that CLIP-score and diversity metrics come from a model that guidance never saw, as the paper used a public
// CLIP that its guided model never saw.
import { type Tensor1D, type Tensor2D, type Tensor4D, tf, type Variable } from "../core/engine.ts";
import { type Init, Module } from "../core/layers.ts";
import { EncoderUNet, type EncoderUNetConfig } from "./encoder-unet.ts";
import { TextTransformer, type TextTransformerConfig } from "./text-transformer.ts";

export interface EvalClipConfig {
  image: Omit<EncoderUNetConfig, "outChannels">;
  text: TextTransformerConfig;
  embedDim: number;
}

function normalize(v: Tensor2D): Tensor2D {
  return tf.div(v, tf.add(tf.sqrt(tf.sum(tf.square(v), -1, true)), 1e-12)) as Tensor2D;
}

export class EvalClip extends Module {
  readonly image: EncoderUNet;
  readonly text: TextTransformer;
  readonly logitScale: Variable;

  constructor(
    init: Init,
    readonly config: EvalClipConfig,
  ) {
    super();
    this.image = this.child(
      "image",
      new EncoderUNet(init, { ...config.image, outChannels: config.embedDim }),
    );
    this.text = this.child("text", new TextTransformer(init, config.text, config.embedDim));
    this.logitScale = this.param("logit_scale", tf.tensor1d([Math.log(1 / 0.07)]));
  }

  /** Unit-norm embeddings of NHWC images in [-1, 1]. */
  embedImage(x: Tensor4D): Tensor2D {
    return tf.tidy(() => {
      const t = tf.zeros([x.shape[0]], "int32") as Tensor1D;
      return normalize(this.image.logits(x, t));
    });
  }

  /** Unit-norm embeddings of token ids [B, ctx] with their mask (1 on real tokens). */
  embedText(tokens: Tensor2D, mask: Tensor2D): Tensor2D {
    return tf.tidy(() => normalize(this.text.encode(tokens, mask).xfProj));
  }
}
