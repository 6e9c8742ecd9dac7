// Guidance gradients on ONNX Runtime. ONNX Runtime has no autodiff, so TensorFlow.js differentiates the guidance
// objective once (a scalar function of x and of data inputs: the noised classifier's Σ log p(y|x_t, t), the noised
// CLIP's exp(τ)·Σ⟨z_i(x_t, t), z_t⟩, or any strategy's own) while src/onnx/trace.ts records the kernels of its
// forward and backward pass; src/onnx/replay.ts turns them into one ONNX graph x, inputs → ∇ₓ objective. One graph
// per objective and input shapes, traced on first use and then run on all cores for every call.
//
// Everything that changes between calls (x, timesteps, labels, text embeddings) is a graph input. A second trace on
// other inputs guards that: if the objective reads an input's values through JavaScript (dataSync, then tf.tensor)
// the two traces hold different constants and the graph is refused, naming the objective. The first call's gradient
// is also computed by TensorFlow.js while tracing; the graph is refused unless ONNX Runtime reproduces it.
import { type Tensor, type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../core/engine.ts";
import { getConvGradMode, setConvGradMode } from "../core/ops.ts";
import { assertSameComputation, graphFromTrace, type TracedComputation } from "./replay.ts";
import { type Feed, type OnnxOptions, OnnxSessions, type Session } from "./runtime.ts";
import { type TfDtype, traceKernels } from "./trace.ts";

/** A scalar objective of x [B, H, W, C] and named data inputs; must not dispose its arguments. */
export type GuideObjective = (x: Tensor4D, inputs: Readonly<Record<string, Tensor>>) => Tensor;

export interface GuideGradGraph {
  bytes: Uint8Array;
  /** Graph input names: "x", then the data inputs in the order given. */
  inputs: string[];
  /** ∇ₓ objective as TensorFlow.js computed it on the traced inputs (the replay's reference). */
  reference: Float32Array;
  kernels: { recorded: number; kept: number };
}

interface TracedGrad extends TracedComputation {
  gradId: number;
  reference: Float32Array;
}

function traceGrad(objective: GuideObjective, x: Tensor4D, inputs: Record<string, Tensor>): TracedGrad {
  const before = getConvGradMode();
  // Custom dx (forward convolutions that kernels.ts replays as Conv), as for training steps.
  setConvGradMode("replay");
  try {
    const { result, trace } = traceKernels(() =>
      tf.tidy(() => tf.grad((xv) => objective(xv as Tensor4D, inputs))(x)),
    );
    try {
      const inputIds = new Map<number, string>([[x.id, "x"]]);
      for (const [k, t] of Object.entries(inputs)) inputIds.set(t.id, k);
      return {
        trace,
        inputIds,
        gradId: trace.resolve(result.id),
        reference: Float32Array.from(result.dataSync()),
      };
    } finally {
      result.dispose();
    }
  } finally {
    setConvGradMode(before);
  }
}

/**
 * Other inputs of the same shapes for the check trace: floats moved (v/2 + 1/4), integers (timesteps, labels) moved
 * by one within the range the caller's own values span.
 */
function variant(t: Tensor): Tensor {
  return tf.tidy(() => {
    if (t.dtype === "float32") return tf.add(tf.mul(t, 0.5), 0.25);
    if (t.dtype === "int32") {
      const one = tf.scalar(1, "int32");
      return tf.where(tf.greater(t, tf.scalar(0, "int32")), tf.sub(t, one), tf.add(t, one));
    }
    throw new Error(`guidance gradient: input of dtype ${t.dtype} is not supported (float32 or int32)`);
  });
}

/**
 * The ONNX graph of ∇ₓ `objective` at the shapes of `x` and `inputs`, traced on them and checked against a second
 * trace on other values (see the header). `what` names the objective in errors.
 */
export function buildGuideGradGraph(
  what: string,
  objective: GuideObjective,
  x: Tensor4D,
  inputs: Record<string, Tensor>,
): GuideGradGraph {
  if ("x" in inputs) throw new Error(`${what}: a data input may not be called 'x' (the image's name)`);
  const traced = traceGrad(objective, x, inputs);
  const other = tf.tidy(() => ({
    x: variant(x) as Tensor4D,
    inputs: Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, variant(v)])),
  }));
  try {
    assertSameComputation(traced, traceGrad(objective, other.x, other.inputs), new Set(), (why) => {
      throw new Error(
        `${what}: its gradient cannot be one ONNX graph: traces on two inputs differ (${why}); the objective must read its inputs only as tensors and must not branch on their values`,
      );
    });
  } finally {
    tf.dispose([other.x, ...Object.values(other.inputs)]);
  }
  const graph = graphFromTrace(
    traced,
    [{ id: traced.gradId, name: "grad", shape: [...x.shape] }],
    [
      { name: "x", dtype: "float32", shape: [...x.shape] },
      ...Object.entries(inputs).map(([k, t]) => ({
        name: k,
        dtype: t.dtype as TfDtype,
        shape: [...t.shape],
      })),
    ],
  );
  return { ...graph, inputs: ["x", ...Object.keys(inputs)], reference: traced.reference };
}

function feedOf(t: Tensor): Feed {
  const d = t.dataSync();
  if (t.dtype === "int32")
    return { type: "int32", data: d instanceof Int32Array ? d : Int32Array.from(d), dims: [...t.shape] };
  if (t.dtype === "float32")
    return {
      type: "float32",
      data: d instanceof Float32Array ? d : Float32Array.from(d),
      dims: [...t.shape],
    };
  throw new Error(`guidance gradient: input of dtype ${t.dtype} is not supported (float32 or int32)`);
}

export interface GuideGradOptions extends OnnxOptions {
  /** Largest |ORT − TF.js| / max|TF.js| accepted on the traced call before the graph is refused (default 1e-4). */
  tolerance?: number;
}

/**
 * ∇ₓ of one objective on ONNX Runtime: one graph and session per input shapes, traced on first use. The session
 * host (a worker thread) starts on the first call, so a loaded but unused guide costs nothing.
 */
export class OnnxGuideGrad {
  private host: OnnxSessions | undefined;
  private readonly sessions = new Map<string, Session>();
  private readonly tolerance: number;
  /** Graphs traced so far, with the kernels each kept (for benches and tests). */
  readonly traced: { key: string; kernels: GuideGradGraph["kernels"]; maxRelDiff: number }[] = [];

  constructor(
    readonly name: string,
    private readonly objective: GuideObjective,
    private readonly opts: GuideGradOptions = {},
  ) {
    this.tolerance = opts.tolerance ?? 1e-4;
  }

  /** ∇ₓ objective(x, inputs), NHWC like x. Inputs keep their names, dtypes and shapes from call to call. */
  grad(x: Tensor4D, inputs: Record<string, Tensor>): Tensor4D {
    const key = [
      `x:${x.dtype}[${x.shape}]`,
      ...Object.entries(inputs).map(([k, t]) => `${k}:${t.dtype}[${t.shape}]`),
    ].join(" ");
    this.host ??= new OnnxSessions(this.opts);
    const host = this.host;
    const n = x.size;
    const feeds = (): Record<string, Feed> => {
      const f: Record<string, Feed> = { x: feedOf(x) };
      for (const [k, t] of Object.entries(inputs)) f[k] = feedOf(t);
      return f;
    };
    let s = this.sessions.get(key);
    if (!s) {
      const graph = buildGuideGradGraph(`${this.name} guidance gradient`, this.objective, x, inputs);
      s = host.session(`${this.name}/${key}`, () => graph.bytes, n);
      const got = host.run(s, feeds(), n);
      let scale = 0;
      let diff = 0;
      for (let i = 0; i < n; i++) {
        scale = Math.max(scale, Math.abs(graph.reference[i]!));
        diff = Math.max(diff, Math.abs(got[i]! - graph.reference[i]!));
      }
      const rel = diff / Math.max(scale, 1e-30);
      if (!(rel <= this.tolerance))
        throw new Error(
          `${this.name} guidance gradient on ONNX Runtime differs from TensorFlow.js's by ${rel.toExponential(2)} of its largest value (> ${this.tolerance}); use --runtime tfjs`,
        );
      this.traced.push({ key, kernels: graph.kernels, maxRelDiff: rel });
      this.sessions.set(key, s);
    }
    return tf.tensor4d(host.run(s, feeds(), n), x.shape);
  }

  dispose(): void {
    this.host?.dispose();
    this.host = undefined;
    this.sessions.clear();
  }
}

/**
 * A conditioned guidance gradient cond → scale·∇ₓ objective(x, t, cond) on ONNX Runtime, with the condGrad
 * signature of the strategies' NoisedClassifier (cond = labels) and NoisedClip (cond = text embeddings). The scale
 * multiplies outside the graph, as the TensorFlow.js condGrad does, so a scale change never retraces.
 */
export function onnxCondGrad<C extends Tensor1D | Tensor2D>(
  name: string,
  objective: (x: Tensor4D, t: Tensor1D, cond: C) => Tensor,
  opts: GuideGradOptions = {},
): {
  condGrad(x: Tensor4D, t: Tensor1D, cond: C, scale: number): Tensor4D;
  engine: OnnxGuideGrad;
  dispose(): void;
} {
  const engine = new OnnxGuideGrad(
    name,
    (x, inputs) => objective(x, inputs.t as Tensor1D, inputs.cond as C),
    opts,
  );
  return {
    engine,
    condGrad: (x, t, cond, scale) =>
      tf.tidy(() => {
        const g = engine.grad(x, { t, cond });
        return tf.mul(g, scale) as Tensor4D;
      }),
    dispose: () => engine.dispose(),
  };
}
