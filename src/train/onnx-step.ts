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
import { assertSameComputation, graphFromTrace } from "../onnx/replay.ts";
import { type Trace, traceKernels, type VirtualKernel } from "../onnx/trace.ts";
import type { StepInputs, TaskInstance } from "./task.ts";

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
      assertSameComputation(traced, traceStep(task, params, check), new Set(paramIds.keys()), (why) => {
        throw new Error(
          `the task's loss is not replayable: traces of two steps differ (${why}); it must read nothing step-dependent but its inputs and must not branch on data`,
        );
      });
    } finally {
      params.forEach(([, p], i) => {
        p.assign(saved[i]!);
      });
      tf.dispose(saved);
    }
  }
  const inputIds = new Map<number, string>();
  for (const [id, n] of paramIds) inputIds.set(id, `param:${n}`);
  for (const [id, n] of traced.inputIds) inputIds.set(id, `input:${n}`);
  const lossName = "loss";
  const gradNames = params.map(([n]) => `grad:${n}`);
  const graph = graphFromTrace(
    { trace: traced.trace, inputIds },
    [
      { id: traced.lossId, name: lossName, shape: [] },
      ...params.map(([, p], i) => ({ id: traced.gradIds[i]!, name: gradNames[i]!, shape: [...p.shape] })),
    ],
    // Every parameter and example is an input even if no kept kernel reads it (a gradient that is a constant),
    // so feeds never depend on the trace.
    [
      ...params.map(([n, p]) => ({ name: `param:${n}`, dtype: "float32" as const, shape: [...p.shape] })),
      ...Object.entries(inputs).map(([k, v]) => ({ name: `input:${k}`, dtype: v.dtype, shape: v.shape })),
    ],
  );
  return {
    bytes: graph.bytes,
    params: params.map(([n]) => n),
    inputs: Object.keys(inputs),
    lossName,
    gradNames,
    reference: traced.reference,
    kernels: graph.kernels,
  };
}
