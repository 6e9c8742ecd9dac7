// A network behind the Denoiser seam: the function type every model presents to the strategies and samplers
// (the zoo's UNet, GLIDE's Text2ImUNet, guided-diffusion's class-conditional UNet, an ONNX session), and the
// repository's UNet as one. It lives with the networks so that strategies and runtimes depend on this type,
// not on each other or on the UNet class.
import type { Tensor1D, Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import type { Prediction } from "../core/types.ts";
import type { Perturbation } from "./perturb.ts";
import type { Conditioning, UNet } from "./unet.ts";

export type { Conditioning } from "./unet.ts";

/**
 * A denoiser network as a function: x NHWC [N, H, W, C], `t` the ORIGINAL timestep of each row [N], and one
 * conditioning row per x row (strategies batch several conditionings into one call). Must not dispose inputs.
 */
export type ModelFn = (x: Tensor4D, t: Tensor1D, cond: Conditioning) => Prediction;

/**
 * The repository's UNet as a ModelFn: the first `inChannels` output channels are eps, the rest (when the model
 * learns the variance range) the learned-range values; with `perturbation`, the perturbed network.
 */
export function unetModel(unet: UNet, perturbation?: Perturbation): ModelFn {
  const c = unet.config.inChannels;
  const resolved = perturbation ? unet.resolvePerturbation(perturbation) : undefined;
  return (x, t, cond) => tf.tidy(() => splitPrediction(unet.forward(x, t, cond, resolved), c));
}

/** A UNet's raw output as a Prediction: eps in the first `c` channels, learned-range values in the rest. */
export function splitPrediction(
  out: Tensor4D,
  c: number,
): { out: Tensor4D; kind: "eps"; varValues?: Tensor4D } {
  const [b, h, w, oc] = out.shape;
  if (oc === c) return { out, kind: "eps" };
  return {
    out: tf.slice(out, [0, 0, 0, 0], [b, h, w, c]),
    kind: "eps",
    varValues: tf.slice(out, [0, 0, 0, c], [b, h, w, oc - c]),
  };
}
