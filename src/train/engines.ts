// Where a training step's gradients are computed. Both engines take the current parameters (one flat buffer) and a
// step, and return the batch's mean loss and the flat gradient; the optimizer stays with the trainer.
//   tfjs: data-parallel worker threads, one TensorFlow.js (wasm) replica each, every worker a slice of the batch.
//   onnx: the task's step traced once and replayed on ONNX Runtime (src/train/onnx-step.ts), the whole batch in
//         one call over all cores: measured 3.6x the throughput of a wasm worker per core on the zoo denoiser.
import type { Worker } from "node:worker_threads";
import { type BackendChoice, spawnTsWorker, type Variable } from "../core/engine.ts";
import { providersFromEnv, spinFromEnv } from "../onnx/runtime.ts";
import type { Slot } from "./adam.ts";
import { buildStepGraph } from "./onnx-step.ts";
import type { Recipe } from "./recipe.ts";
import type { TaskInstance } from "./task.ts";
import type { WorkerReply, WorkerRequest } from "./worker.ts";

export interface GradEngine {
  /** For the trainer's start line, e.g. "2 worker(s) on wasm". */
  readonly describe: string;
  /** How many slices the batch is split into (contrastive losses see negatives from one slice only). */
  readonly slices: number;
  grads(step: number, params: Float32Array): Promise<{ grad: Float32Array; loss: number }>;
  close(): Promise<void>;
}

export function splitBatch(batch: number, parts: number): number[] {
  const bounds = [0];
  for (let i = 1; i <= parts; i++) bounds.push(Math.round((batch * i) / parts));
  return bounds;
}

class WorkerHandle {
  private pending: ((r: WorkerReply) => void) | undefined;
  private failure: Error | undefined;

  private constructor(private readonly worker: Worker) {
    this.worker.on("message", (r: WorkerReply) => {
      const p = this.pending;
      this.pending = undefined;
      p?.(r);
    });
    this.worker.on("error", (e) => {
      this.failure = e;
      this.pending?.({ type: "error", message: e.stack ?? e.message });
    });
    // A worker can also end without an error event (process.exit, an abort in the wasm runtime): fail the waiting
    // request instead of leaving it pending forever.
    this.worker.on("exit", (code) => {
      this.failure ??= new Error(`training worker exited (code ${code})`);
      const p = this.pending;
      this.pending = undefined;
      p?.({ type: "error", message: this.failure.message });
    });
  }

  static async start(): Promise<WorkerHandle> {
    return new WorkerHandle(await spawnTsWorker(new URL("./worker.ts", import.meta.url)));
  }

  request(msg: WorkerRequest): Promise<WorkerReply> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.pending = (r) =>
        r.type === "error" ? reject(new Error(`training worker: ${r.message}`)) : resolve(r);
      this.worker.postMessage(msg);
    });
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

/** Restarts of the workers for one step before the run gives up (the count starts over after a good step). */
const MAX_RESTARTS = 3;

/** Worker threads on TensorFlow.js; a worker that dies is replaced and the step retried (workers hold no state). */
export async function tfjsEngine(recipe: Recipe, backend: BackendChoice, n: number): Promise<GradEngine> {
  const start = async () => {
    const ws = await Promise.all(Array.from({ length: n }, () => WorkerHandle.start()));
    const ready = await Promise.all(ws.map((w) => w.request({ type: "init", recipe, backend })));
    return { ws, info: ready[0] as Extract<WorkerReply, { type: "ready" }> };
  };
  let { ws, info } = await start();
  let restarts = 0;
  const bounds = splitBatch(recipe.batchSize, n);
  return {
    describe: `${n} TensorFlow.js worker(s) on ${info.backend}`,
    slices: n,
    async grads(step, params) {
      for (;;) {
        try {
          const replies = (await Promise.all(
            ws.map((w, i) => w.request({ type: "grad", step, from: bounds[i]!, to: bounds[i + 1]!, params })),
          )) as Extract<WorkerReply, { type: "grad" }>[];
          const grad = new Float32Array(params.length);
          let loss = 0;
          replies.forEach((r, i) => {
            const w = (bounds[i + 1]! - bounds[i]!) / recipe.batchSize;
            for (let j = 0; j < grad.length; j++) grad[j]! += w * r.grad[j]!;
            loss += w * r.loss;
          });
          restarts = 0;
          return { grad, loss };
        } catch (e) {
          // A worker that dies (e.g. the wasm heap failing an allocation after hours) costs one retried step: the
          // parameters travel with every request, and examples depend on the step only.
          if (restarts >= MAX_RESTARTS) throw e;
          restarts += 1;
          process.stderr.write(
            `\n[train] a worker failed at step ${step} (${(e as Error).message.split("\n")[0]}); restarting the workers and retrying the step (restart ${restarts}/${MAX_RESTARTS})\n`,
          );
          await Promise.all(ws.map((w) => w.close()));
          ({ ws, info } = await start());
        }
      }
    },
    close: async () => {
      await Promise.all(ws.map((w) => w.close()));
    },
  };
}

/**
 * The step on ONNX Runtime: traced on `traceStep`'s examples and checked against `traceStep + 1`'s (the graph must
 * not depend on the data), then one session run per step with the whole batch.
 */
export async function onnxEngine(
  task: TaskInstance,
  params: [string, Variable][],
  slots: readonly Slot[],
  recipe: Recipe,
  threads: number,
  traceStep: number,
): Promise<GradEngine> {
  const ort = await import("onnxruntime-node");
  const b = recipe.batchSize;
  const graph = buildStepGraph(task, params, task.inputs(traceStep, 0, b), task.inputs(traceStep + 1, 0, b));
  const providers = providersFromEnv();
  const session = await ort.InferenceSession.create(graph.bytes, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: "all",
    logSeverityLevel: 3,
    executionProviders: providers,
    extra: { session: { intra_op: { allow_spinning: spinFromEnv(false) ? "1" : "0" } } },
  });
  return {
    describe: `ONNX Runtime (${providers.join(", ")}), ${threads} thread(s), ${graph.kernels.kept} traced kernels`,
    slices: 1,
    async grads(step, flat) {
      const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {};
      for (const s of slots) {
        feeds[`param:${s.name}`] = new ort.Tensor(
          "float32",
          flat.subarray(s.offset, s.offset + s.size),
          s.shape,
        );
      }
      for (const [k, v] of Object.entries(task.inputs(step, 0, b))) {
        feeds[`input:${k}`] = new ort.Tensor(v.dtype, v.data, v.shape);
      }
      const res = await session.run(feeds);
      const grad = new Float32Array(flat.length);
      for (const [i, s] of slots.entries())
        grad.set(res[graph.gradNames[i]!]!.data as Float32Array, s.offset);
      const loss = (res[graph.lossName]!.data as Float32Array)[0] ?? Number.NaN;
      for (const t of Object.values(res)) t.dispose();
      return { grad, loss };
    },
    close: async () => {
      await session.release();
    },
  };
}
