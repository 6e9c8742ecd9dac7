// Synchronous sampling code over an asynchronous model runtime. The strategies and samplers call their model as a
// synchronous ModelFn (the seam every runtime presents: Node blocks on a worker with Atomics.wait). A browser page
// opened from file:// cannot block (no SharedArrayBuffer without cross-origin isolation) and onnxruntime-web only
// answers with a Promise. So the whole sampling function is re-run from the start: every model call the cache
// already answers returns at once; the first one it cannot answer throws `Suspend` with its inputs, the driver
// awaits the runtime, stores the output under that call's index, and runs the function again. The sampling code is
// deterministic (seeded noise, pure tensor ops), so each replay makes the same calls with the same inputs up to the
// new one. Model forwards run once each; the tensor arithmetic between them is repeated (quadratic in the steps),
// which the explorer's bench row measures.
import type { Tensor1D, Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import type { Prediction } from "../core/types.ts";
import type { Conditioning, ModelFn } from "../strategies/strategy.ts";

/** One forward the runtime must compute: a text-conditional UNet's inputs (the names of src/onnx/export.ts). */
export interface ForwardRequest {
  /** Which model ("denoiser", "weak"). */
  model: string;
  /** Position of this call in the sampling function's sequence of model calls. */
  index: number;
  x: Float32Array;
  xShape: [number, number, number, number];
  t: Float32Array;
  tokens: Int32Array;
  mask: Float32Array;
  ctx: number;
}

/** Thrown by a replaying model when its output is not cached yet; carries what to compute. */
export class Suspend extends Error {
  constructor(readonly request: ForwardRequest) {
    super(`model call ${request.index} is not computed yet (the replay driver catches this)`);
  }
}

/** Computes a forward's raw output NHWC [B, H, W, outChannels] as float32. */
export type AsyncForward = (r: ForwardRequest) => Promise<Float32Array>;

export interface ReplayStats {
  /** Times the sampling function was (re)started. */
  runs: number;
  /** Forwards computed by the runtime (each once). */
  forwards: number;
  /** Milliseconds spent awaiting the runtime; the rest of the wall time is the replayed tensor arithmetic. */
  forwardMs: number;
  /** Milliseconds in the sampling function, all its runs together (the replayed arithmetic). */
  bodyMs: number;
  /** Milliseconds of its last, complete run: the loop's arithmetic once, what a resumable loop would cost. */
  lastRunMs: number;
}

/**
 * strategy.ts's splitPrediction (eps in the first `c` channels, learned-range values in the rest) done on the host
 * array: TensorFlow.js's cpu backend slices channels element by element through its generic strided path, which
 * cost more than the sampler's own arithmetic. Copies are exact, so the values are splitPrediction's.
 */
export function splitChannels(
  raw: Float32Array,
  [b, h, w]: [number, number, number],
  c: number,
  oc: number,
): Prediction {
  const pixels = b * h * w;
  if (oc === c) return { out: tf.tensor4d(raw, [b, h, w, oc]), kind: "eps" };
  const out = new Float32Array(pixels * c);
  const rest = new Float32Array(pixels * (oc - c));
  for (let p = 0; p < pixels; p++) {
    for (let i = 0; i < c; i++) out[p * c + i] = raw[p * oc + i]!;
    for (let i = c; i < oc; i++) rest[p * (oc - c) + i - c] = raw[p * oc + i]!;
  }
  return {
    out: tf.tensor4d(out, [b, h, w, c]),
    kind: "eps",
    varValues: tf.tensor4d(rest, [b, h, w, oc - c]),
  };
}

export class Replay {
  private readonly outputs: Float32Array[] = [];
  private calls = 0;
  readonly stats: ReplayStats = { runs: 0, forwards: 0, forwardMs: 0, bodyMs: 0, lastRunMs: 0 };

  /**
   * `name`'s forward as a synchronous ModelFn whose raw output has `outChannels` channels, of which the first
   * `inChannels` are the prediction (the rest the learned-range variance values), as strategy.ts's unetModel.
   */
  model(name: string, inChannels: number, outChannels: number): ModelFn {
    return (x: Tensor4D, t: Tensor1D, cond: Conditioning) => {
      const index = this.calls++;
      const [b, h, w] = x.shape;
      const cached = this.outputs[index];
      if (cached) {
        if (cached.length !== b * h * w * outChannels)
          throw new Error(
            `replay: call ${index} of ${name} changed shape between runs (non-deterministic code?)`,
          );
        return splitChannels(cached, [b, h, w], inChannels, outChannels);
      }
      if (!cond.tokens || !cond.mask)
        throw new Error(`replay: ${name} is text-conditional: pass tokens and mask`);
      throw new Suspend({
        model: name,
        index,
        x: x.dataSync() as Float32Array,
        xShape: [...x.shape],
        t: Float32Array.from(t.dataSync()),
        tokens: Int32Array.from(cond.tokens.dataSync()),
        mask: Float32Array.from(cond.mask.dataSync()),
        ctx: cond.tokens.shape[1]!,
      });
    };
  }

  /**
   * Runs `body` to completion, computing each forward it needs with `forward`. `body` must be deterministic and
   * must free what it allocated when an exception passes through it (tf.tidy scopes do).
   */
  async run<T>(body: () => T, forward: AsyncForward): Promise<T> {
    for (;;) {
      this.calls = 0;
      this.stats.runs++;
      const start = performance.now();
      try {
        const out = body();
        this.stats.lastRunMs = performance.now() - start;
        this.stats.bodyMs += this.stats.lastRunMs;
        return out;
      } catch (e) {
        this.stats.bodyMs += performance.now() - start;
        if (!(e instanceof Suspend)) throw e;
        const t0 = performance.now();
        this.outputs[e.request.index] = await forward(e.request);
        this.stats.forwardMs += performance.now() - t0;
        this.stats.forwards++;
      }
    }
  }
}
