// Turns a trace of TensorFlow.js kernels (src/onnx/trace.ts) into one ONNX graph: the pieces that every traced
// computation shares, whether a training step (src/train/onnx-step.ts) or a guidance gradient (guide-grad.ts). The caller
// names which traced values are graph inputs and which are outputs; every other leaf becomes a constant. Kernels
// that reach no output are dropped.
//
// A constant is only right if the traced computation would have made the same one on other inputs, so callers
// trace twice on different inputs and compare with assertSameComputation: a computation that reads input-dependent
// values through JavaScript (dataSync, then tf.tensor) or branches on them is refused when the traces show it (a
// branch that goes the same way on both cannot be seen).
import { Graph } from "./graph.ts";
import { emitKernel, hasEmitter, ONNX_DTYPE } from "./kernels.ts";
import type { TfDtype, Trace, TracedKernel, TracedValue } from "./trace.ts";

/** A trace with the ids of the values that are graph inputs (id → graph input name). */
export interface TracedComputation {
  trace: Trace;
  inputIds: Map<number, string>;
}

/**
 * Conv2D of a zero PadV2 (how ops.ts's input gradient pads dy) becomes one Conv2D with explicit pads: ONNX
 * Runtime's Conv runs a padded 34×34 input several times slower than the same convolution given pads.
 */
export function foldConvPadding(trace: Trace): void {
  const producer = new Map<number, TracedKernel>();
  for (const k of trace.kernels) for (const o of k.outputs) producer.set(o.id, k);
  for (const k of trace.kernels) {
    if (k.name !== "Conv2D") continue;
    const x = k.inputs.find(([key]) => key === "x");
    const pad = producer.get(x?.[1].id ?? -1);
    if (!x || !pad || pad.name !== "PadV2" || (pad.attrs.constantValue ?? 0) !== 0) continue;
    const p = pad.attrs.paddings as [number, number][];
    const spatialOnly = p.length === 4 && p[0]![0] + p[0]![1] + p[3]![0] + p[3]![1] === 0;
    const own =
      k.attrs.pad === "valid"
        ? [
            [0, 0],
            [0, 0],
            [0, 0],
            [0, 0],
          ]
        : k.attrs.pad;
    if (!spatialOnly || !Array.isArray(own)) continue;
    const o = own as [number, number][];
    k.attrs = {
      ...k.attrs,
      pad: [
        [0, 0],
        [o[1]![0] + p[1]![0], o[1]![1] + p[1]![1]],
        [o[2]![0] + p[2]![0], o[2]![1] + p[2]![1]],
        [0, 0],
      ],
    };
    x[1] = pad.inputs[0]![1];
  }
}

/** Values whose elements are all one number: Fill/OnesLike/ZerosLike outputs and uniform constants (not inputs). */
function uniformValues(trace: Trace, notConstant: ReadonlySet<number>): Map<number, number> {
  const out = new Map<number, number>();
  for (const k of trace.kernels) {
    const o = k.outputs[0];
    if (!o) continue;
    if (k.name === "Fill") out.set(o.id, k.attrs.value as number);
    else if (k.name === "OnesLike") out.set(o.id, 1);
    else if (k.name === "ZerosLike") out.set(o.id, 0);
  }
  for (const [id, data] of trace.values) {
    if (notConstant.has(id)) continue;
    if (data.length > 1 && data.every((v) => v === data[0])) out.set(id, data[0]!);
  }
  return out;
}

/** Kernel i is kept when one of its outputs reaches an output. */
function liveKernels(trace: Trace, outputs: number[]): boolean[] {
  const need = new Set(outputs);
  const keep = new Array<boolean>(trace.kernels.length).fill(false);
  for (let i = trace.kernels.length - 1; i >= 0; i--) {
    const k = trace.kernels[i]!;
    if (!k.outputs.some((o) => need.has(o.id))) continue;
    keep[i] = true;
    for (const [, v] of k.inputs) need.add(v.id);
  }
  return keep;
}

const sameShape = (a: TracedValue, b: TracedValue) =>
  a.dtype === b.dtype && a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i]);

/**
 * Checks that two traces on different inputs are one computation: the same kernels, attributes and shapes, the
 * same roles for every value, and equal constants (values that are neither graph inputs nor in `notConstant`).
 * `fail` turns the reason into the caller's error.
 */
export function assertSameComputation(
  a: TracedComputation,
  b: TracedComputation,
  notConstant: ReadonlySet<number>,
  fail: (why: string) => never,
): void {
  const ka = a.trace.kernels;
  const kb = b.trace.kernels;
  if (ka.length !== kb.length) fail(`${ka.length} vs ${kb.length} kernels`);
  // Values are matched by position: the j-th new id met in one trace is the j-th in the other.
  const pos = (m: Map<number, number>, id: number) => {
    let p = m.get(id);
    if (p === undefined) {
      p = m.size;
      m.set(id, p);
    }
    return p;
  };
  const ma = new Map<number, number>();
  const mb = new Map<number, number>();
  for (let i = 0; i < ka.length; i++) {
    const x = ka[i]!;
    const y = kb[i]!;
    const where = `kernel ${i} (${x.name})`;
    if (x.name !== y.name || JSON.stringify(x.attrs) !== JSON.stringify(y.attrs))
      fail(`${where} vs ${y.name}`);
    if (x.inputs.length !== y.inputs.length || x.outputs.length !== y.outputs.length) fail(where);
    for (let j = 0; j < x.inputs.length; j++) {
      const va = x.inputs[j]![1];
      const vb = y.inputs[j]![1];
      if (!sameShape(va, vb) || pos(ma, va.id) !== pos(mb, vb.id)) fail(`${where}, input ${x.inputs[j]![0]}`);
      const ca = a.trace.values.get(va.id);
      const cb = b.trace.values.get(vb.id);
      const constant = ca && !notConstant.has(va.id) && !a.inputIds.has(va.id);
      if (constant) {
        if (!cb || ca.length !== cb.length || ca.some((v, k) => v !== cb[k])) {
          fail(`${where} reads a constant whose values changed between the two`);
        }
      }
    }
    for (let j = 0; j < x.outputs.length; j++) {
      if (!sameShape(x.outputs[j]!, y.outputs[j]!)) fail(`${where}, output ${j}`);
      pos(ma, x.outputs[j]!.id);
      pos(mb, y.outputs[j]!.id);
    }
  }
}

export interface GraphOutput {
  /** The traced value (already resolved through trace.resolve). */
  id: number;
  name: string;
  shape: number[];
}

export interface ReplayGraph {
  bytes: Uint8Array;
  /** Recorded kernels, and how many of them the graph keeps (the rest reach no output). */
  kernels: { recorded: number; kept: number };
}

/**
 * The ONNX graph of a trace: graph inputs for the values in `c.inputIds`, constants for every other leaf, one
 * float output per `outputs` entry. `declare` lists graph inputs to add even when no kept kernel reads them, so
 * that a caller's feeds never depend on the trace.
 */
export function graphFromTrace(
  c: TracedComputation,
  outputs: GraphOutput[],
  declare: { name: string; dtype: TfDtype; shape: number[] }[] = [],
): ReplayGraph {
  const { trace } = c;
  foldConvPadding(trace);
  const g = new Graph();
  const names = new Map<number, string>();
  const declared = new Set<string>();
  const valueName = (v: TracedValue): string => {
    const known = names.get(v.id);
    if (known) return known;
    const input = c.inputIds.get(v.id);
    let name: string;
    if (input !== undefined) {
      name = g.input(input, ONNX_DTYPE[v.dtype], v.shape);
      declared.add(input);
    } else {
      const data = trace.values.get(v.id);
      if (!data)
        throw new Error(`ONNX replay: value ${v.id} [${v.shape}] was read before any kernel made it`);
      name = g.constant("const", v.dtype, data, v.shape);
    }
    names.set(v.id, name);
    return name;
  };
  const uniform = uniformValues(trace, new Set(c.inputIds.keys()));
  const keep = liveKernels(
    trace,
    outputs.map((o) => o.id),
  );
  trace.kernels.forEach((k, i) => {
    if (!keep[i]) return;
    if (k.inputs.length === 0 && !hasEmitter(k.name)) {
      // A kernel of no tensors (Range, ...) made the same values in both traces: replay them as constants.
      for (const o of k.outputs) names.set(o.id, valueName(o));
      return;
    }
    const byKey = new Map(k.inputs);
    const outs = emitKernel({
      g,
      kernel: k,
      input: (key) => {
        const v = byKey.get(key);
        if (!v) throw new Error(`ONNX replay: ${k.name} has no input '${key}'`);
        return valueName(v);
      },
      inputValue: (key) => {
        const v = byKey.get(key);
        if (!v) throw new Error(`ONNX replay: ${k.name} has no input '${key}'`);
        return v;
      },
      uniform: (key) => {
        const v = byKey.get(key);
        return v ? uniform.get(v.id) : undefined;
      },
    });
    for (const [j, o] of k.outputs.entries()) names.set(o.id, outs[j]!);
  });
  for (const d of declare) {
    if (!declared.has(d.name)) g.input(d.name, ONNX_DTYPE[d.dtype], d.shape);
  }
  for (const o of outputs) {
    let value = names.get(o.id);
    if (!value) {
      const data = trace.values.get(o.id);
      if (!data) throw new Error(`ONNX replay: output value ${o.id} was never computed`);
      value = g.constant("const", "float32", data, o.shape);
    }
    g.identity(value, o.name);
    g.output(o.name, "float", o.shape);
  }
  return {
    bytes: g.serialize(),
    kernels: { recorded: trace.kernels.length, kept: keep.filter(Boolean).length },
  };
}
