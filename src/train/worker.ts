// A data-parallel training worker: one model replica with its own TensorFlow.js backend (wasm runs one thread per
// process, so one worker per core). It returns gradients for its slice of the batch and applies the averaged
// gradient with the same optimizer as every other replica, so replicas stay identical without sending weights.
import { writeFileSync } from "node:fs";
import { parentPort } from "node:worker_threads";
import { type BackendChoice, initEngine, type Tensor, tf } from "../core/engine.ts";
import { Adam } from "./adam.ts";
import type { Recipe } from "./recipe.ts";
import type { TaskInstance } from "./task.ts";
import { buildTask } from "./tasks.ts";

/** Named float32 arrays with their shapes: the checkpoint's content. */
export type NamedArrays = Record<string, { data: Float32Array; shape: number[] }>;

export type WorkerRequest =
  | { type: "init"; recipe: Recipe; backend: BackendChoice; state?: NamedArrays; step: number }
  | { type: "grad"; step: number; from: number; to: number }
  | { type: "apply"; grad: Float32Array; lr: number }
  | { type: "state" }
  | { type: "exit" };

export type WorkerReply =
  | { type: "ready"; numParams: number; backend: string }
  | { type: "grad"; grad: Float32Array; loss: number }
  | { type: "applied"; gradNorm: number }
  | { type: "state"; state: NamedArrays }
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
let adam: Adam | undefined;

function flatGrad(grads: Tensor[]): Float32Array {
  // One read-back per step: concatenating first avoids one slow dataSync per variable.
  return tf.tidy(() => tf.concat(grads.map((g) => tf.reshape(g, [-1])))).dataSync() as Float32Array;
}

function handle(msg: WorkerRequest): WorkerReply | undefined {
  switch (msg.type) {
    case "init": {
      task = buildTask(msg.recipe);
      const params = task.model.namedParameters();
      adam = new Adam(params, msg.recipe.optim);
      if (msg.state) loadState(msg.state, msg.step);
      return { type: "ready", numParams: task.model.numParams(), backend: tf.getBackend() };
    }
    case "grad": {
      if (!task || !adam) throw new Error("worker not initialised");
      injectFault(msg.step);
      const vars = adam.params.map(([, p]) => p);
      const t = task;
      const { value, grads } = tf.variableGrads(() => t.loss(msg.step, msg.from, msg.to), vars);
      // variableGrads keys gradients by the variables' engine names, not by our parameter names.
      const ordered = adam.params.map(([n, p]) => {
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
    case "apply": {
      if (!adam) throw new Error("worker not initialised");
      const a = adam;
      let offset = 0;
      const grads = a.params.map(([, p]) => {
        const g = tf.tensor(msg.grad.subarray(offset, offset + p.size), p.shape);
        offset += p.size;
        return g;
      });
      const gradNorm = a.apply(grads, msg.lr);
      for (const g of grads) g.dispose();
      return { type: "applied", gradNorm };
    }
    case "state": {
      if (!task || !adam) throw new Error("worker not initialised");
      const state: NamedArrays = {};
      for (const [n, p] of task.model.namedParameters()) {
        state[`model.${n}`] = { data: p.dataSync() as Float32Array, shape: p.shape };
      }
      for (const [n, t] of adam.state())
        state[`optim.${n}`] = { data: t.dataSync() as Float32Array, shape: t.shape };
      return { type: "state", state };
    }
    case "exit":
      task?.dispose();
      adam?.dispose();
      process.exit(0);
  }
}

function loadState(state: NamedArrays, step: number): void {
  if (!task || !adam) return;
  const model = new Map<string, Tensor>();
  const optim = new Map<string, Tensor>();
  for (const [n] of task.model.namedParameters()) {
    const a = state[`model.${n}`];
    if (a) model.set(n, tf.tensor(a.data, a.shape));
  }
  task.model.loadStateDict(model, { source: "checkpoint" });
  for (const n of adam.state().keys()) {
    const a = state[`optim.${n}`];
    if (a) optim.set(n, tf.tensor(a.data, a.shape));
  }
  adam.load(optim, step, "checkpoint");
  for (const t of [...model.values(), ...optim.values()]) t.dispose();
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
