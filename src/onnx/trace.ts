// Records the TensorFlow.js kernels that one computation runs (a training step's forward AND backward pass, as the
// tape executes them) so that src/onnx/kernels.ts can replay them as an ONNX graph on ONNX Runtime. Only top-level
// kernels are kept: a kernel that calls others (a virtual kernel below, or the tape cloning a saved tensor) is one
// recorded node. Tensors that a recorded kernel reads but none produced are the leaves: parameters, the caller's
// inputs, and constants made with tf.tensor (diffusion tables, masks, scalars), whose values are captured here. The
// tape saves the tensors a gradient needs as Identity clones made inside the forward kernel; those clones are
// recorded as aliases of the tensor they copy, so a saved input is the same value in the replay.
import { type Tensor, tf } from "../core/engine.ts";

export type TfDtype = "float32" | "int32" | "bool";

export interface TracedValue {
  id: number;
  shape: number[];
  dtype: TfDtype;
}

export interface TracedKernel {
  name: string;
  /** The kernel's named inputs in the order tfjs passed them (Concat's are "0", "1", ...). */
  inputs: [string, TracedValue][];
  attrs: Record<string, unknown>;
  outputs: TracedValue[];
}

export interface Trace {
  kernels: TracedKernel[];
  /** Values of the leaves and of kernels without inputs (Fill, Range), read when they were recorded. */
  values: Map<number, Float32Array | Int32Array | Uint8Array>;
  /** The id a tensor id stands for (itself, or the tensor it is a saved clone of). */
  resolve(id: number): number;
}

function describe(t: Tensor, id = t.id): TracedValue {
  if (t.dtype !== "float32" && t.dtype !== "int32" && t.dtype !== "bool") {
    throw new Error(`trace: tensor of dtype ${t.dtype} is not supported`);
  }
  return { id, shape: [...t.shape], dtype: t.dtype };
}

function read(t: Tensor): Float32Array | Int32Array | Uint8Array {
  const d = t.dataSync();
  if (d instanceof Float32Array || d instanceof Int32Array || d instanceof Uint8Array) return d.slice();
  throw new Error(`trace: cannot read values of dtype ${t.dtype}`);
}

interface HookableEngine {
  runKernel(name: string, inputs: Record<string, Tensor>, attrs?: Record<string, unknown>): unknown;
}

/** A kernel the active backend lacks, computed from other kernels while it is recorded as itself. */
export type VirtualKernel = (inputs: Record<string, Tensor>, attrs: Record<string, unknown>) => Tensor;

/**
 * Runs `fn` once, normally, and returns its result with the kernels it ran. `virtual` supplies kernels the backend
 * has not registered (each recorded as one node under its own name). Not reentrant.
 */
export function traceKernels<T>(
  fn: () => T,
  virtual: Record<string, VirtualKernel> = {},
): { result: T; trace: Trace } {
  const engine = tf.engine() as unknown as HookableEngine;
  const original = engine.runKernel;
  const kernels: TracedKernel[] = [];
  const values = new Map<number, Float32Array | Int32Array | Uint8Array>();
  const produced = new Set<number>();
  const alias = new Map<number, number>();
  const resolve = (id: number): number => {
    let r = id;
    for (let a = alias.get(r); a !== undefined; a = alias.get(r)) r = a;
    return r;
  };
  let depth = 0;
  engine.runKernel = function (this: HookableEngine, name, inputs, attrs) {
    if (depth > 0) {
      const y = original.call(this, name, inputs, attrs);
      const x = inputs?.x;
      if (name === "Identity" && x instanceof tf.Tensor && y instanceof tf.Tensor) alias.set(y.id, x.id);
      return y;
    }
    const ins = Object.entries(inputs ?? {}).filter(([, t]) => t instanceof tf.Tensor) as [string, Tensor][];
    for (const [, t] of ins) {
      const id = resolve(t.id);
      if (!produced.has(id) && !values.has(id)) values.set(id, read(t));
    }
    depth += 1;
    let out: unknown;
    try {
      const stand = virtual[name];
      out =
        stand && !tf.getKernel(name, tf.getBackend())
          ? stand(inputs, attrs ?? {})
          : original.call(this, name, inputs, attrs);
    } finally {
      depth -= 1;
    }
    const outs = (Array.isArray(out) ? out : [out]) as Tensor[];
    for (const t of outs) produced.add(t.id);
    if (ins.length === 0) for (const t of outs) values.set(t.id, read(t));
    kernels.push({
      name,
      inputs: ins.map(([k, t]) => [k, describe(t, resolve(t.id))]),
      attrs: { ...(attrs ?? {}) },
      outputs: outs.map((t) => describe(t)),
    });
    return out;
  };
  try {
    return { result: fn(), trace: { kernels, values, resolve } };
  } finally {
    engine.runKernel = original;
  }
}
