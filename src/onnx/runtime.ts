// The UNet on onnxruntime-node (CPU) as a synchronous ModelFn. onnxruntime-node only runs sessions asynchronously,
// while ModelFn is synchronous, so sessions live in a worker thread (worker.mjs) and each call blocks on
// Atomics.wait until the worker has written the output into a SharedArrayBuffer. One session per batch size is
// created on first use and reused; the output is copied once, from the shared buffer into the result tensor.
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { Tensor1D, Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import type { Prediction } from "../core/types.ts";
import type { Conditioning, UNet } from "../models/unet.ts";
import type { ModelFn } from "../strategies/strategy.ts";
import { exportUNet } from "./export.ts";

export interface OnnxOptions {
  /** intraOpNumThreads; default all cores. */
  threads?: number;
  /** Longest a single call may block waiting for the worker (default 10 minutes). */
  timeoutMs?: number;
}

interface Feed {
  type: "float32" | "int32";
  data: Float32Array | Int32Array;
  dims: number[];
}

interface Session {
  id: number;
  data: SharedArrayBuffer;
}

/** Whether onnxruntime-node can be loaded here (tests skip otherwise). */
export async function onnxAvailable(): Promise<string | undefined> {
  try {
    await import("onnxruntime-node");
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

export class OnnxUNetRunner {
  private readonly worker: Worker;
  private readonly signal = new SharedArrayBuffer(8);
  private readonly flag = new Int32Array(this.signal);
  private readonly sessions = new Map<number, Session>();
  private nextId = 0;
  private readonly threads: number;
  private readonly timeoutMs: number;

  constructor(
    readonly unet: UNet,
    opts: OnnxOptions = {},
  ) {
    this.threads = opts.threads ?? availableParallelism();
    this.timeoutMs = opts.timeoutMs ?? 600_000;
    this.worker = new Worker(new URL("./worker.mjs", import.meta.url), {
      workerData: { signal: this.signal },
    });
    this.worker.unref();
  }

  /** Posts a message and blocks until the worker answers; returns the bytes it wrote. */
  private call(msg: Record<string, unknown>, data: SharedArrayBuffer): Uint8Array {
    Atomics.store(this.flag, 0, 0);
    this.worker.postMessage({ ...msg, data });
    // The worker cannot be observed while this thread blocks, so a crashed one is caught by a time limit.
    if (Atomics.wait(this.flag, 0, 0, this.timeoutMs) === "timed-out")
      throw new Error(`onnxruntime worker gave no answer within ${this.timeoutMs} ms`);
    const status = Atomics.load(this.flag, 0);
    const n = this.flag[1]!;
    const bytes = new Uint8Array(data, 0, n);
    if (status !== 1) throw new Error(`onnxruntime: ${new TextDecoder().decode(bytes.slice())}`);
    return bytes;
  }

  private session(b: number, h: number, w: number): Session {
    const key = b * 1e8 + h * 1e4 + w;
    let s = this.sessions.get(key);
    if (!s) {
      const bytes = exportUNet(this.unet, { batch: b, height: h, width: w });
      const outBytes = 4 * b * h * w * this.unet.config.outChannels;
      s = { id: this.nextId++, data: new SharedArrayBuffer(Math.max(outBytes, 4096)) };
      this.call({ kind: "create", id: s.id, bytes, threads: this.threads }, s.data);
      this.sessions.set(key, s);
    }
    return s;
  }

  forward(x: Tensor4D, t: Tensor1D, cond: Conditioning = {}): Tensor4D {
    const [b, h, w, c] = x.shape;
    const s = this.session(b, h, w);
    const feeds: Record<string, Feed> = {
      x: { type: "float32", data: x.dataSync() as Float32Array, dims: [b, h, w, c] },
      t: { type: "float32", data: Float32Array.from(t.dataSync()), dims: [b] },
    };
    if (this.unet.text) {
      if (!cond.tokens || !cond.mask)
        throw new Error("this UNet is text-conditional: pass `tokens` and `mask`");
      const ctx = cond.tokens.shape[1];
      feeds.tokens = { type: "int32", data: Int32Array.from(cond.tokens.dataSync()), dims: [b, ctx] };
      feeds.mask = { type: "float32", data: Float32Array.from(cond.mask.dataSync()), dims: [b, ctx] };
    }
    const oc = this.unet.config.outChannels;
    const bytes = this.call({ kind: "run", id: s.id, feeds }, s.data);
    const out = new Float32Array(b * h * w * oc);
    new Uint8Array(out.buffer).set(bytes);
    return tf.tensor4d(out, [b, h, w, oc]);
  }

  dispose(): void {
    void this.worker.terminate();
    this.sessions.clear();
  }
}

/** The UNet on onnxruntime-node as a ModelFn (same output split as strategy.ts's unetModel). */
export function onnxModelFn(unet: UNet, opts: OnnxOptions = {}): ModelFn & { runner: OnnxUNetRunner } {
  const runner = new OnnxUNetRunner(unet, opts);
  const c = unet.config.inChannels;
  const fn = (x: Tensor4D, t: Tensor1D, cond: Conditioning): Prediction =>
    tf.tidy(() => {
      const out = runner.forward(x, t, cond);
      const [b, h, w, oc] = out.shape;
      if (oc === c) return { out, kind: "eps" as const };
      return {
        out: tf.slice(out, [0, 0, 0, 0], [b, h, w, c]),
        kind: "eps" as const,
        varValues: tf.slice(out, [0, 0, 0, c], [b, h, w, oc - c]),
      };
    });
  return Object.assign(fn, { runner });
}
