// A data-parallel gradient worker: one model replica with its own TensorFlow.js backend (wasm runs one thread per
// process, so one worker per core). Each request carries the current parameters (flat, in the model's parameter
// order) and asks for the gradient of a slice of a step's batch; the optimizer lives in the trainer's thread, so a
// worker holds no state a crash could lose.
import { writeFileSync } from "node:fs";
import { parentPort } from "node:worker_threads";
import { type BackendChoice, initEngine, type Tensor, tf } from "../core/engine.ts";
import type { Recipe } from "./recipe.ts";
import type { TaskInstance } from "./task.ts";
import { buildTask } from "./tasks.ts";

/** Named float32 arrays with their shapes: the checkpoint's content. */
export type NamedArrays = Record<string, { data: Float32Array; shape: number[] }>;

export type WorkerRequest =
  | { type: "init"; recipe: Recipe; backend: BackendChoice }
  | { type: "grad"; step: number; from: number; to: number; params: Float32Array }
  | { type: "exit" };

export type WorkerReply =
  | { type: "ready"; numParams: number; backend: string }
  | { type: "grad"; grad: Float32Array; loss: number }
  | { type: "error"; message: string };

let task: TaskInstance | undefined;

/**
 * Fault injection for the trainer's restart test: GUIDANCE_LAB_FAIL_ONCE="<step>:<marker file>" fails the first
 * worker that reaches that step, once (the marker records that it happened).
 */
function injectFault(step: number): void {
  const spec = process.env.GUIDANCE_LAB_FAIL_ONCE;
  if (!spec) return;
  const [at, marker] = spec.split(":");
  if (Number(at) !== step || !marker) return;
  try {
    writeFileSync(marker, String(step), { flag: "wx" });
  } catch {
    return; // already failed once
  }
  throw new Error(`injected failure at step ${step}`);
}

function flatGrad(grads: Tensor[]): Float32Array {
  // One read-back per step: concatenating first avoids one slow dataSync per variable.
  return tf.tidy(() => tf.concat(grads.map((g) => tf.reshape(g, [-1])))).dataSync() as Float32Array;
}

function setParams(t: TaskInstance, flat: Float32Array): void {
  let offset = 0;
  for (const [, p] of t.model.namedParameters()) {
    const v = tf.tensor(flat.subarray(offset, offset + p.size), p.shape);
    p.assign(v);
    v.dispose();
    offset += p.size;
  }
  if (offset !== flat.length)
    throw new Error(`worker: ${flat.length} parameter values for a model of ${offset}`);
}

function handle(msg: WorkerRequest): WorkerReply | undefined {
  switch (msg.type) {
    case "init": {
      task = buildTask(msg.recipe);
      return { type: "ready", numParams: task.model.numParams(), backend: tf.getBackend() };
    }
    case "grad": {
      if (!task) throw new Error("worker not initialised");
      injectFault(msg.step);
      const t = task;
      setParams(t, msg.params);
      const named = t.model.namedParameters();
      const { value, grads } = tf.variableGrads(
        () => t.loss(msg.step, msg.from, msg.to),
        named.map(([, p]) => p),
      );
      // variableGrads keys gradients by the variables' engine names, not by our parameter names.
      const ordered = named.map(([n, p]) => {
        const g = grads[p.name];
        if (!g) throw new Error(`no gradient for parameter ${n}`);
        return g;
      });
      const grad = flatGrad(ordered);
      const loss = value.dataSync()[0] ?? Number.NaN;
      value.dispose();
      for (const g of Object.values(grads)) g.dispose();
      return { type: "grad", grad, loss };
    }
    case "exit":
      task?.dispose();
      process.exit(0);
  }
}

if (parentPort) {
  const port = parentPort;
  let ready: Promise<unknown> | undefined;
  port.on("message", async (msg: WorkerRequest) => {
    try {
      if (msg.type === "init") ready = initEngine(msg.backend, { quiet: true, matMul: "fast" });
      await ready;
      const reply = handle(msg);
      if (reply) {
        const transfer = reply.type === "grad" ? [reply.grad.buffer] : [];
        port.postMessage(reply, transfer as ArrayBuffer[]);
      }
    } catch (e) {
      port.postMessage({ type: "error", message: e instanceof Error ? (e.stack ?? e.message) : String(e) });
    }
  });
}
