// The worker half of SplitGuide (split-guide.ts): one zoo guidance model (classifier or noised CLIP) on its own
// TensorFlow.js wasm backend, answering gradient requests through shared memory so that the caller can block on
// Atomics.wait while it computes the other part of the batch.
import { parentPort, workerData } from "node:worker_threads";
import { initEngine, type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../core/engine.ts";
import type { NoisedClipModel } from "../nets/clip.ts";
import type { EncoderUNet } from "../nets/encoder-unet.ts";
import { loadZooModel } from "./registry.ts";

export interface SplitGuideRequest {
  x: Float32Array;
  xShape: [number, number, number, number];
  t: Int32Array;
  /** Class labels (classifier) or unit-norm text embeddings, row-major [rows, D] (noised CLIP). */
  cond: Float32Array | Int32Array;
  condShape: number[];
  scale: number;
  /** Receives the gradient (float32, x's shape), or an error message's UTF-8 bytes. */
  out: SharedArrayBuffer;
}

const { name, dir, signal } = workerData as { name: string; dir: string; signal: SharedArrayBuffer };
const flag = new Int32Array(signal);

function answer(status: 1 | 2, bytes: Uint8Array, out: SharedArrayBuffer): void {
  const n = Math.min(bytes.length, out.byteLength);
  new Uint8Array(out, 0, n).set(bytes.subarray(0, n));
  Atomics.store(flag, 1, n);
  Atomics.store(flag, 0, status);
  Atomics.notify(flag, 0);
}

const ready = (async () => {
  await initEngine("wasm", { quiet: true });
  return loadZooModel(name, dir);
})();

parentPort!.on("message", async (req: SplitGuideRequest) => {
  try {
    const { info, model } = await ready;
    const grad = tf.tidy(() => {
      const x = tf.tensor4d(req.x, req.xShape) as Tensor4D;
      const t = tf.tensor1d(req.t, "int32") as Tensor1D;
      if (info.task === "classifier") {
        const y = tf.tensor1d(req.cond as Int32Array, "int32") as Tensor1D;
        return (model as EncoderUNet).condGrad(x, t, y, req.scale);
      }
      const z = tf.tensor2d(req.cond as Float32Array, req.condShape as [number, number]) as Tensor2D;
      return (model as NoisedClipModel).condGrad(x, t, z, req.scale);
    });
    const data = grad.dataSync() as Float32Array;
    grad.dispose();
    answer(1, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), req.out);
  } catch (e) {
    answer(2, new TextEncoder().encode((e as Error).message), req.out);
  }
});
