// Gradient guidance on two cores. The guidance gradient (classifier or noised CLIP, TensorFlow.js: ONNX Runtime has
// no autodiff) dominates classifier- and CLIP-guided sampling, and wasm runs one thread per process. SplitGuide sends
// the first half of each batch to a worker thread holding the same zoo model on its own wasm backend and computes
// the other half here at the same time, then blocks on Atomics.wait for the worker's half: calls stay synchronous,
// as the sampler's are. Each row's gradient depends only on that row, so the result equals the one-thread gradient
// up to float rounding.
import { Worker } from "node:worker_threads";
import { type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../core/engine.ts";
import type { SplitGuideRequest } from "./split-guide-worker.ts";

type Local<C> = { condGrad(x: Tensor4D, t: Tensor1D, cond: C, scale: number): Tensor4D };

export interface SplitGuideOptions {
  /** A worker that has not answered by then is taken as dead (default 10 minutes). */
  timeoutMs?: number;
}

/**
 * The zoo guidance model `name` in `dir` (a classifier: C = labels, Tensor1D; a noised CLIP: C = text embeddings,
 * Tensor2D), its gradient split between this thread (`local`, the same model loaded here) and a worker.
 */
export class SplitGuide<C extends Tensor1D | Tensor2D> {
  private worker: Worker | undefined;
  private readonly signal = new SharedArrayBuffer(8);
  private readonly flag = new Int32Array(this.signal);
  private out = new SharedArrayBuffer(4096);
  private readonly timeoutMs: number;
  private failure: Error | undefined;

  constructor(
    private readonly local: Local<C>,
    private readonly name: string,
    private readonly dir: string,
    opts: SplitGuideOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? 600_000;
  }

  /** Started on the first gradient, so that a sweep without gradient guidance never loads a second copy. */
  private started(): Worker {
    if (this.worker) return this.worker;
    // ts-worker.mjs installs tsx's loader in the worker, then imports the TypeScript module.
    const w = new Worker(new URL("../core/ts-worker.mjs", import.meta.url), {
      workerData: {
        name: this.name,
        dir: this.dir,
        signal: this.signal,
        __tsModule: new URL("./split-guide-worker.ts", import.meta.url).href,
      },
    });
    w.on("error", (e) => {
      this.failure = e;
    });
    w.unref();
    this.worker = w;
    return w;
  }

  condGrad(x: Tensor4D, t: Tensor1D, cond: C, scale: number): Tensor4D {
    const n = x.shape[0];
    if (n < 2) return this.local.condGrad(x, t, cond, scale);
    if (this.failure) throw new Error(`split guidance worker: ${this.failure.message}`);
    const k = Math.floor(n / 2);
    const [, h, w, c] = x.shape;
    const bytes = 4 * k * h * w * c;
    if (this.out.byteLength < bytes) this.out = new SharedArrayBuffer(bytes);
    const parts = tf.tidy(() => [
      tf.slice(x, [0, 0, 0, 0], [k, h, w, c]),
      tf.cast(tf.slice(t, [0], [k]), "int32"),
      cond.rank === 1 ? tf.cast(tf.slice(cond, [0], [k]), "int32") : tf.slice(cond, [0, 0], [k, -1]),
    ]);
    const [hx, ht, hc] = parts.map((p) => p.dataSync()) as [
      Float32Array,
      Int32Array,
      Float32Array | Int32Array,
    ];
    tf.dispose(parts);
    const head = { x: hx, t: ht, cond: hc };
    const req: SplitGuideRequest = {
      ...head,
      xShape: [k, h, w, c],
      condShape: cond.rank === 1 ? [k] : [k, cond.shape[1] ?? 0],
      scale,
      out: this.out,
    };
    Atomics.store(this.flag, 0, 0);
    this.started().postMessage(req);
    const tail = tf.tidy(() =>
      this.local.condGrad(
        tf.slice(x, [k, 0, 0, 0], [n - k, h, w, c]),
        tf.slice(t, [k], [n - k]),
        (cond.rank === 1 ? tf.slice(cond, [k], [n - k]) : tf.slice(cond, [k, 0], [n - k, -1])) as C,
        scale,
      ),
    );
    try {
      if (Atomics.wait(this.flag, 0, 0, this.timeoutMs) === "timed-out")
        throw new Error(`split guidance worker gave no answer within ${this.timeoutMs} ms`);
      const size = this.flag[1]!;
      if (Atomics.load(this.flag, 0) !== 1)
        throw new Error(
          `split guidance worker: ${new TextDecoder().decode(new Uint8Array(this.out, 0, size).slice())}`,
        );
      const first = new Float32Array(this.out, 0, k * h * w * c).slice();
      return tf.tidy(() => tf.concat([tf.tensor4d(first, [k, h, w, c]), tail], 0));
    } finally {
      tail.dispose();
    }
  }

  dispose(): void {
    void this.worker?.terminate();
    this.worker = undefined;
  }
}
