// Any TensorFlow.js function of named tensors (a guidance gradient, a metric's forward) as an ONNX graph on ONNX
// Runtime. ONNX Runtime has no autodiff and this project has no exporter for most of its models, but every model is
// TensorFlow.js code: the function runs once while src/onnx/trace.ts records its kernels (for a gradient, the
// forward and the backward pass the tape runs), and src/onnx/replay.ts turns them into one graph from the named
// inputs to the output. One graph per function and input shapes, traced on first use, then run on all cores.
//
// Everything that changes between calls (images, timesteps, labels, text embeddings) is a graph input. A second
// trace on other input values guards that: if the function reads an input's values through JavaScript (dataSync,
// then tf.tensor) the two traces hold different constants and the graph is refused, naming the function. The first
// call's output is also computed by TensorFlow.js while tracing; the graph is refused unless ONNX Runtime
// reproduces it.
import { type Tensor, tf } from "../core/engine.ts";
import { getConvGradMode, setConvGradMode } from "../core/ops.ts";
import { assertSameComputation, graphFromTrace, type TracedComputation } from "./replay.ts";
import { type Feed, type OnnxOptions, OnnxSessions, type Session } from "./runtime.ts";
import { type TfDtype, traceKernels } from "./trace.ts";

/** A function of named tensors to one float32 tensor; must not dispose its inputs. */
export type TensorFn = (inputs: Readonly<Record<string, Tensor>>) => Tensor;

export interface TracedGraph {
  bytes: Uint8Array;
  /** Graph input names, in the order given. */
  inputs: string[];
  outShape: number[];
  /** The output as TensorFlow.js computed it on the traced inputs (the replay's reference). */
  reference: Float32Array;
  kernels: { recorded: number; kept: number };
}

interface Traced extends TracedComputation {
  outId: number;
  outShape: number[];
  reference: Float32Array;
}

function traceFn(fn: TensorFn, inputs: Record<string, Tensor>): Traced {
  const before = getConvGradMode();
  // Custom dx (forward convolutions that kernels.ts replays as Conv), as for training steps.
  setConvGradMode("replay");
  try {
    const { result, trace } = traceKernels(() => tf.tidy(() => fn(inputs)));
    try {
      if (result.dtype !== "float32") throw new Error(`output of dtype ${result.dtype}, expected float32`);
      const inputIds = new Map<number, string>();
      for (const [k, t] of Object.entries(inputs)) inputIds.set(t.id, k);
      return {
        trace,
        inputIds,
        outId: trace.resolve(result.id),
        outShape: [...result.shape],
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
 * Other inputs of the same shapes for the check trace: floats moved (v/2 + 1/4), integers (timesteps, labels, token
 * ids) moved by one within the range the caller's own values span.
 */
function variant(t: Tensor): Tensor {
  return tf.tidy(() => {
    if (t.dtype === "float32") return tf.add(tf.mul(t, 0.5), 0.25);
    if (t.dtype === "int32") {
      const one = tf.scalar(1, "int32");
      return tf.where(tf.greater(t, tf.scalar(0, "int32")), tf.sub(t, one), tf.add(t, one));
    }
    throw new Error(`traced function: input of dtype ${t.dtype} is not supported (float32 or int32)`);
  });
}

/**
 * The ONNX graph of `fn` at the shapes of `inputs`, traced on them and checked against a second trace on other
 * values (see the header). `what` names the function in errors.
 */
export function buildTracedGraph(what: string, fn: TensorFn, inputs: Record<string, Tensor>): TracedGraph {
  const traced = traceFn(fn, inputs);
  const other = tf.tidy(() => Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, variant(v)])));
  try {
    assertSameComputation(traced, traceFn(fn, other), new Set(), (why) => {
      throw new Error(
        `${what} cannot be one ONNX graph: traces on two inputs differ (${why}); it must read its inputs only as tensors and must not branch on their values`,
      );
    });
  } finally {
    tf.dispose(Object.values(other));
  }
  const graph = graphFromTrace(
    traced,
    [{ id: traced.outId, name: "out", shape: traced.outShape }],
    Object.entries(inputs).map(([k, t]) => ({ name: k, dtype: t.dtype as TfDtype, shape: [...t.shape] })),
  );
  return {
    ...graph,
    inputs: Object.keys(inputs),
    outShape: traced.outShape,
    reference: traced.reference,
  };
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
  throw new Error(`traced function: input of dtype ${t.dtype} is not supported (float32 or int32)`);
}

export interface TracedOptions extends OnnxOptions {
  /** Largest |ORT − TF.js| / max|TF.js| accepted on the traced call before the graph is refused (default 1e-4). */
  tolerance?: number;
  /** A session host to share (its owner disposes it); default one of this function's own, started on first use. */
  sessions?: OnnxSessions;
  /**
   * When the graph cannot be built or disagrees with TensorFlow.js: compute `fn` with TensorFlow.js for those input
   * shapes, saying so once on stderr (GUIDANCE_LAB_QUIET=1 silences it), instead of throwing. Default false.
   */
  fallback?: boolean;
}

/**
 * `fn` on ONNX Runtime: one graph and session per input shapes, traced on first use. The session host (a worker
 * thread) starts on the first call, so a loaded but unused function costs nothing.
 */
export class OnnxTraced {
  private host: OnnxSessions | undefined;
  private readonly sessions = new Map<string, { s: Session; outShape: number[] } | "tfjs">();
  private readonly tolerance: number;
  /** Graphs traced so far, with the kernels each kept and its agreement with TensorFlow.js (benches, tests). */
  readonly traced: { key: string; kernels: TracedGraph["kernels"]; maxRelDiff: number }[] = [];

  constructor(
    readonly name: string,
    private readonly fn: TensorFn,
    private readonly opts: TracedOptions = {},
  ) {
    this.tolerance = opts.tolerance ?? 1e-4;
    this.host = opts.sessions;
  }

  /** fn(inputs). Inputs are matched by name; each new set of names, dtypes and shapes is traced once. */
  run(inputs: Record<string, Tensor>): Tensor {
    const key = Object.entries(inputs)
      .map(([k, t]) => `${k}:${t.dtype}[${t.shape}]`)
      .join(" ");
    this.host ??= new OnnxSessions(this.opts);
    const host = this.host;
    const feeds = (): Record<string, Feed> =>
      Object.fromEntries(Object.entries(inputs).map(([k, t]) => [k, feedOf(t)]));
    let entry = this.sessions.get(key);
    if (!entry) {
      try {
        entry = this.build(key, inputs, feeds);
      } catch (e) {
        if (!this.opts.fallback) throw e;
        if (process.env.GUIDANCE_LAB_QUIET !== "1")
          process.stderr.write(
            `[runtime] ${this.name} stays on TensorFlow.js for inputs ${key}: ${(e as Error).message}\n`,
          );
        entry = "tfjs";
      }
      this.sessions.set(key, entry);
    }
    if (entry === "tfjs") return tf.tidy(() => this.fn(inputs));
    const size = entry.outShape.reduce((a, b) => a * b, 1);
    return tf.tensor(host.run(entry.s, feeds(), size), entry.outShape);
  }

  /** Traces, exports and checks the graph of one set of input shapes (see the header). */
  private build(
    key: string,
    inputs: Record<string, Tensor>,
    feeds: () => Record<string, Feed>,
  ): { s: Session; outShape: number[] } {
    const host = this.host!;
    const graph = buildTracedGraph(this.name, this.fn, inputs);
    const n = graph.reference.length;
    const s = host.session(`${this.name}/${key}`, () => graph.bytes, n);
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
        `${this.name} on ONNX Runtime differs from TensorFlow.js by ${rel.toExponential(2)} of its largest value (> ${this.tolerance}); use --runtime tfjs`,
      );
    this.traced.push({ key, kernels: graph.kernels, maxRelDiff: rel });
    return { s, outShape: graph.outShape };
  }

  dispose(): void {
    if (!this.opts.sessions) this.host?.dispose();
    this.host = undefined;
    this.sessions.clear();
  }
}
