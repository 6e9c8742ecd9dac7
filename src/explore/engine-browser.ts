// What src/core/engine.ts is inside the explorer's browser bundle (esbuild aliases one to the other; see build.ts):
// the same `tf` namespace on TensorFlow.js's pure-JS cpu backend. The strategies' and samplers' tensors are a few
// 32×32 images, so the cpu backend costs little next to the denoiser's forwards (onnxruntime-web), and it needs no
// wasm file that a file:// page could not fetch.
import * as tfCore from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";

export const tf = tfCore;
export type {
  Rank,
  Scalar,
  Tensor,
  Tensor1D,
  Tensor2D,
  Tensor3D,
  Tensor4D,
  Variable,
} from "@tensorflow/tfjs-core";

export async function initBrowserEngine(): Promise<string> {
  if (!(await tfCore.setBackend("cpu"))) throw new Error("TensorFlow.js: the cpu backend did not initialise");
  await tfCore.ready();
  return tfCore.getBackend();
}
