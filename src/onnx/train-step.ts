// A training step (loss and every parameter's gradient) on ONNX Runtime. TensorFlow.js runs the task's loss and its
// backward pass once while src/onnx/trace.ts records the kernels; src/onnx/kernels.ts replays them as one ONNX graph
// whose inputs are the parameters and the step's examples and whose outputs are the loss and the gradients. The
// tape's own gradient definitions (src/core/ops.ts and tfjs) are replayed, so the two runtimes share one
// definition of every model, loss and derivative; only the arithmetic is ONNX Runtime's.
//
// A second trace on another step's examples, with the parameters nudged, must record the same kernels with the same
// constants: a loss that reads step- or parameter-dependent values besides its inputs, or branches on them, is
// refused when the two traces show it (a branch that goes the same way on both steps cannot be seen).
import { type Scalar, type Tensor, type Tensor4D, tf, type Variable } from "../core/engine.ts";
import { convFilterGrad, getConvGradMode, setConvGradMode } from "../core/ops.ts";
import type { StepInputs, TaskInstance } from "../train/task.ts";
import { Graph } from "./graph.ts";
import { emitKernel, hasEmitter, ONNX_DTYPE } from "./kernels.ts";
import {
  type Trace,
  type TracedKernel,
  type TracedValue,
  traceKernels,
  type VirtualKernel,
} from "./trace.ts";

export interface StepGraph {
  /** The serialised ONNX model. */
  bytes: Uint8Array;
  /** Parameter names in the order of `gradNames`; their graph inputs are `param:<name>`. */
  params: string[];
  /** Example names; their graph inputs are `input:<name>`. */
  inputs: string[];
  lossName: string;
  gradNames: string[];
  /** Loss and gradients as TensorFlow.js computed them while tracing (the replay's reference). */
  reference: { loss: number; grads: Float32Array[] };
  /** Recorded kernels, and how many of them the graph keeps (the rest do not reach the loss or a gradient). */
  kernels: { recorded: number; kept: number };
}

interface Traced {
  trace: Trace;
  lossId: number;
  gradIds: number[];
  reference: StepGraph["reference"];
  inputIds: Map<number, string>;
}

/**
 * The filter gradient as one kernel, so kernels.ts replays it as an im2col product (ONNX Runtime's Conv runs the
 * batch↔channel-swapped formulation with its 32×32 "filter" at about a quarter of its usual speed).
 */
const VIRTUAL_KERNELS: Record<string, VirtualKernel> = {
  Conv2DBackpropFilter: (inputs, attrs) => {
    const pad = attrs.pad as [number, number][];
    const strides = attrs.strides as [number, number];
    return convFilterGrad(
      inputs.x as Tensor4D,
      inputs.dy as Tensor4D,
      attrs.filterShape as number[],
      strides[0],
      {
        top: pad[1]![0],
        bottom: pad[1]![1],
        left: pad[2]![0],
        right: pad[2]![1],
      },
    );
  },
};

function traceStep(task: TaskInstance, params: [string, Variable][], inputs: StepInputs): Traced {
  const tensors: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(inputs)) tensors[k] = tf.tensor(v.data, v.shape, v.dtype);
  const inputIds = new Map(Object.entries(tensors).map(([k, t]) => [t.id, k]));
  const vars = params.map(([, p]) => p);
  try {
    const before = getConvGradMode();
    setConvGradMode("replay");
    let traced: ReturnType<typeof traceKernels<ReturnType<typeof tf.variableGrads>>>;
    try {
      traced = traceKernels(
        () => tf.variableGrads(() => task.lossOf(tensors) as Scalar, vars),
        VIRTUAL_KERNELS,
      );
    } finally {
      setConvGradMode(before);
    }
    const { result, trace } = traced;
    const gradIds: number[] = [];
    const grads: Float32Array[] = [];
    for (const [name, p] of params) {
      const g = result.grads[p.name];
      if (!g) throw new Error(`no gradient for parameter ${name}`);
      gradIds.push(trace.resolve(g.id));
      grads.push(Float32Array.from(g.dataSync()));
    }
    const loss = result.value.dataSync()[0] ?? Number.NaN;
    const lossId = trace.resolve(result.value.id);
    tf.dispose([result.value, ...Object.values(result.grads)]);
    return { trace, lossId, gradIds, reference: { loss, grads }, inputIds };
  } finally {
    tf.dispose(Object.values(tensors));
  }
}

/**
 * Conv2D of a zero PadV2 (how ops.ts's input gradient pads dy) becomes one Conv2D with explicit pads: ONNX
 * Runtime's Conv runs a padded 34×34 input several times slower than the same convolution given pads.
 */
function foldConvPadding(trace: Trace): void {
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

/** Kernel i is kept when one of its outputs reaches the loss or a gradient. */
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
 * Checks that two traces of different steps are one computation: the same kernels, attributes and shapes, the
 * same roles for every value, and equal constants.
 */
function assertSameComputation(a: Traced, b: Traced, paramIds: Set<number>): void {
  const ka = a.trace.kernels;
  const kb = b.trace.kernels;
  const fail = (why: string) => {
    throw new Error(
      `the task's loss is not replayable: traces of two steps differ (${why}); it must read nothing step-dependent but its inputs and must not branch on data`,
    );
  };
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
      const constant = ca && !paramIds.has(va.id) && !a.inputIds.has(va.id);
      if (constant) {
        if (!cb || ca.length !== cb.length || ca.some((v, k) => v !== cb[k])) {
          fail(`${where} reads a constant whose values changed between the steps`);
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

/**
 * Traces the task's step on `inputs` (and, when given, on `check`, another step's examples of the same shapes) and
 * builds the graph.
 */
export function buildStepGraph(
  task: TaskInstance,
  params: [string, Variable][],
  inputs: StepInputs,
  check?: StepInputs,
): StepGraph {
  const traced = traceStep(task, params, inputs);
  const paramIds = new Map(params.map(([n, p]) => [p.id, n]));
  if (check) {
    // The check also runs with every parameter scaled by 1.001, so a constant computed in JS from a parameter's
    // values (which the replay would freeze) differs between the traces too.
    const saved = params.map(([, p]) => tf.clone(p));
    try {
      for (const [, p] of params) {
        const nudged = tf.mul(p, 1.001);
        p.assign(nudged);
        nudged.dispose();
      }
      assertSameComputation(traced, traceStep(task, params, check), new Set(paramIds.keys()));
    } finally {
      params.forEach(([, p], i) => {
        p.assign(saved[i]!);
      });
      tf.dispose(saved);
    }
  }
  const { trace } = traced;
  foldConvPadding(trace);
  const g = new Graph();
  const names = new Map<number, string>();
  const declared = new Set<number>();
  const valueName = (v: TracedValue): string => {
    const known = names.get(v.id);
    if (known) return known;
    const param = paramIds.get(v.id);
    const input = traced.inputIds.get(v.id);
    let name: string;
    if (param !== undefined) name = g.input(`param:${param}`, ONNX_DTYPE[v.dtype], v.shape);
    else if (input !== undefined) name = g.input(`input:${input}`, ONNX_DTYPE[v.dtype], v.shape);
    else {
      const data = trace.values.get(v.id);
      if (!data)
        throw new Error(`ONNX replay: value ${v.id} [${v.shape}] was read before any kernel made it`);
      name = g.constant("const", v.dtype, data, v.shape);
    }
    names.set(v.id, name);
    declared.add(v.id);
    return name;
  };
  const uniform = uniformValues(trace, new Set([...paramIds.keys(), ...traced.inputIds.keys()]));
  const keep = liveKernels(trace, [traced.lossId, ...traced.gradIds]);
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
  // Every parameter is an input even if its gradient is a constant (e.g. zero), so feeds never depend on the trace.
  for (const [n, p] of params) {
    if (!declared.has(p.id)) g.input(`param:${n}`, "float", [...p.shape]);
  }
  const usedInputs = new Set([...declared].map((id) => traced.inputIds.get(id)));
  for (const [k, v] of Object.entries(inputs)) {
    if (!usedInputs.has(k)) g.input(`input:${k}`, ONNX_DTYPE[v.dtype], v.shape);
  }
  const lossName = "loss";
  const outputValue = (id: number, shape: number[]): string => {
    const n = names.get(id);
    if (n) return n;
    const data = trace.values.get(id);
    if (data) return g.constant("const", "float32", data, shape);
    throw new Error(`ONNX replay: output value ${id} was never computed`);
  };
  g.identity(outputValue(traced.lossId, []), lossName);
  g.output(lossName, "float", []);
  const gradNames = params.map(([n, p], i) => {
    const name = `grad:${n}`;
    g.identity(outputValue(traced.gradIds[i]!, [...p.shape]), name);
    g.output(name, "float", [...p.shape]);
    return name;
  });
  return {
    bytes: g.serialize(),
    params: params.map(([n]) => n),
    inputs: Object.keys(inputs),
    lossName,
    gradNames,
    reference: traced.reference,
    kernels: { recorded: trace.kernels.length, kept: keep.filter(Boolean).length },
  };
}
