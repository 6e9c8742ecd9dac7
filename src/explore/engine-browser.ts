// What src/core/engine.ts is inside the explorer's browser bundle (esbuild aliases one to the other; see build.ts):
// the same `tf` namespace, on TensorFlow.js's wasm backend as in the CLI (so the strategies' and samplers'
// arithmetic runs the same kernels), its binary handed over as a blob: URL because a file:// page cannot fetch its
// neighbours. Without wasm SIMD the pure-JS cpu backend takes over (slower; the page says which).
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
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

/** Initialises the backend: wasm from `simdWasm` (tfjs-backend-wasm-simd.wasm's bytes), else cpu. */
export async function initBrowserEngine(simdWasm?: Uint8Array): Promise<string> {
  if (simdWasm) {
    const url = URL.createObjectURL(new Blob([simdWasm as BlobPart], { type: "application/wasm" }));
    // Only the SIMD binary is shipped (threads need cross-origin isolation, which a file:// page never has). A
    // served, isolated page would make TensorFlow.js pick its threaded binary, so it is told there are no threads:
    // its part is the strategies' and samplers' small arithmetic; the forwards' threads are onnxruntime-web's.
    tfCore.env().set("WASM_HAS_MULTITHREAD_SUPPORT", false);
    setWasmPaths({
      "tfjs-backend-wasm.wasm": url,
      "tfjs-backend-wasm-simd.wasm": url,
      "tfjs-backend-wasm-threaded-simd.wasm": url,
    });
    try {
      if (await tfCore.setBackend("wasm")) {
        await tfCore.ready();
        await registerGradients();
        return "wasm";
      }
    } catch {
      // fall back to cpu below
    }
  }
  if (!(await tfCore.setBackend("cpu"))) throw new Error("TensorFlow.js: no backend initialised");
  await tfCore.ready();
  await registerGradients();
  return tfCore.getBackend();
}

/** The kernels' gradients, registered by the engine's initialisation as initEngine does (src/core/gradients.ts). */
async function registerGradients(): Promise<void> {
  (await import("../core/gradients.ts")).registerGradients();
}
