// TensorFlow.js kernels as ONNX nodes: replays a Trace (src/onnx/trace.ts) as a graph. Every value keeps its tfjs
// layout (NHWC images); a convolution transposes its input and filter to ONNX's NCHW/OIHW and its output back. Shapes and dtypes
// come from the trace, so every shape-like input is a constant here. A kernel without an entry is an error that
// names it. test/onnx-train.test.ts replays every kernel of the table against TensorFlow.js (values and gradients).
import { tf } from "../core/engine.ts";
import { DType, type DTypeName, type Graph } from "./graph.ts";
import type { TfDtype, TracedKernel, TracedValue } from "./trace.ts";

export const ONNX_DTYPE: Record<TfDtype, DTypeName> = { float32: "float", int32: "int32", bool: "bool" };

/** What an emitter sees: the graph, its inputs' value names, and the traced kernel. */
export interface EmitContext {
  g: Graph;
  /** ONNX value name of input `key` of the kernel. */
  input(key: string): string;
  inputValue(key: string): TracedValue;
  /** The single value every element of input `key` has, when the trace shows it (Fill, OnesLike, a uniform constant). */
  uniform(key: string): number | undefined;
  kernel: TracedKernel;
}

type Emitter = (c: EmitContext) => string[];

const one =
  (op: string, keys: string[] = ["x"]): Emitter =>
  (c) => [
    c.g.node(
      op,
      keys.map((k) => c.input(k)),
    ),
  ];

const binary = (op: string): Emitter => one(op, ["a", "b"]);

function axesOf(axis: unknown, rank: number): number[] {
  return tf.util.parseAxisParam(
    axis as number | number[],
    Array.from({ length: rank }, () => 1),
  );
}

function out(c: EmitContext, i = 0): TracedValue {
  const v = c.kernel.outputs[i];
  if (!v) throw new Error(`${c.kernel.name}: no output ${i}`);
  return v;
}

/** A scalar constant of a dtype, broadcastable in any elementwise op. */
function scalarOf(g: Graph, v: number, dtype: TfDtype): string {
  return g.constant(`${dtype}_scalar`, dtype, [v], []);
}

function reduce(op: string, axisAttr: string): Emitter {
  return (c) => {
    const x = c.inputValue("x");
    const axes = axesOf(c.kernel.attrs[axisAttr], x.shape.length);
    const keepdims = c.kernel.attrs.keepDims ? 1 : 0;
    if (axes.length === 0) return [c.g.node("Identity", [c.input("x")])];
    // ReduceSum takes its axes as an input since opset 13; the others still as an attribute at opset 17.
    if (op === "ReduceSum") return [c.g.node(op, [c.input("x"), c.g.int64s("axes", axes)], { keepdims })];
    return [c.g.node(op, [c.input("x")], { axes, keepdims })];
  };
}

/** [kh, kw, in, out] NHWC convolution → Transpose, NCHW Conv, Transpose. */
const conv2d: Emitter = (c) => {
  const x = c.inputValue("x");
  const f = c.inputValue("filter");
  const a = c.kernel.attrs;
  if (a.dataFormat !== undefined && a.dataFormat !== "NHWC")
    throw new Error(`Conv2D: dataFormat ${a.dataFormat} is not supported`);
  const strides = (typeof a.strides === "number" ? [a.strides, a.strides] : a.strides) as number[];
  const dil = (
    a.dilations === undefined
      ? [1, 1]
      : typeof a.dilations === "number"
        ? [a.dilations, a.dilations]
        : a.dilations
  ) as number[];
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    f.shape as [number, number, number, number],
    strides as [number, number],
    dil as [number, number],
    a.pad as "same",
    a.dimRoundingMode as "floor" | undefined,
  );
  // ONNX's Conv floors output sizes; tfjs's "ceil" rounding would need other pads.
  if (a.dimRoundingMode === "ceil") throw new Error("Conv2D: dimRoundingMode 'ceil' is not supported");
  const p = info.padInfo;
  const g = c.g;
  const xn = g.node("Transpose", [c.input("x")], { perm: [0, 3, 1, 2] });
  const w = g.node("Transpose", [c.input("filter")], { perm: [3, 2, 0, 1] });
  const y = g.node("Conv", [xn, w], {
    kernel_shape: [f.shape[0]!, f.shape[1]!],
    strides,
    dilations: dil,
    pads: [p.top, p.left, p.bottom, p.right],
  });
  return [g.node("Transpose", [y], { perm: [0, 2, 3, 1] })];
};

/**
 * dL/dw of an NHWC convolution as an im2col product: the kh·kw strided windows of the padded input, each
 * [B·Ho·Wo, Ci], stacked to [kh·kw, N, Ci]; dy as [Co, N]; one batched MatMul gives [kh·kw, Co, Ci].
 */
const conv2dFilterGrad: Emitter = (c) => {
  const x = c.inputValue("x");
  const dy = c.inputValue("dy");
  const a = c.kernel.attrs;
  const [kh, kw, ci, co] = a.filterShape as [number, number, number, number];
  const [sh, sw] = a.strides as [number, number];
  const pad = a.pad as [number, number][];
  const dil = a.dilations as [number, number] | undefined;
  if (!Array.isArray(pad) || (dil && (dil[0] !== 1 || dil[1] !== 1)))
    throw new Error("Conv2DBackpropFilter: only explicit pads and no dilation are supported");
  const [b, ho, wo] = dy.shape as [number, number, number, number];
  const n = b * ho * wo;
  const g = c.g;
  const xp = g.node("Pad", [
    c.input("x"),
    g.int64s("pads", [0, pad[1]![0], pad[2]![0], 0, 0, pad[1]![1], pad[2]![1], 0]),
  ]);
  const windows: string[] = [];
  for (let u = 0; u < kh; u++) {
    for (let v = 0; v < kw; v++) {
      const w = g.node("Slice", [
        xp,
        g.int64s("starts", [u, v]),
        g.int64s("ends", [u + sh * (ho - 1) + 1, v + sw * (wo - 1) + 1]),
        g.int64s("axes", [1, 2]),
        g.int64s("steps", [sh, sw]),
      ]);
      windows.push(g.node("Reshape", [w, g.int64s("shape", [1, n, x.shape[3]!])]));
    }
  }
  const cols = windows.length === 1 ? windows[0]! : g.node("Concat", windows, { axis: 0 });
  const dyT = g.node("Transpose", [g.node("Reshape", [c.input("dy"), g.int64s("shape", [n, co])])], {
    perm: [1, 0],
  });
  const prod = g.node("MatMul", [dyT, cols]); // [kh·kw, Co, Ci]
  const t = g.node("Transpose", [prod], { perm: [0, 2, 1] });
  return [g.node("Reshape", [t, g.int64s("shape", [kh, kw, ci, co])])];
};

/** Nearest-neighbour resize by integer factors (tfjs without align-corners or half-pixel centres: src = ⌊dst/s⌋). */
function nearestFactors(c: EmitContext, from: number[], to: number[]): [number, number] {
  const a = c.kernel.attrs;
  if (a.alignCorners || a.halfPixelCenters)
    throw new Error(`${c.kernel.name}: only alignCorners = halfPixelCenters = false is supported`);
  const sh = to[1]! / from[1]!;
  const sw = to[2]! / from[2]!;
  if (!Number.isInteger(sh) || !Number.isInteger(sw))
    throw new Error(`${c.kernel.name}: only integer scale factors are supported, got ${sh}×${sw}`);
  return [sh, sw];
}

const EMITTERS: Record<string, Emitter> = {
  Identity: one("Identity"),
  Reshape: (c) => [c.g.node("Reshape", [c.input("x"), c.g.int64s("shape", out(c).shape)])],
  Cast: (c) => {
    const to = out(c).dtype;
    if (to === c.inputValue("x").dtype) return [c.g.node("Identity", [c.input("x")])];
    return [c.g.node("Cast", [c.input("x")], { to: DType[ONNX_DTYPE[to]] })];
  },
  Add: binary("Add"),
  Sub: binary("Sub"),
  Multiply: (c) => {
    // The tape's Sum/Mean gradients broadcast dy by multiplying with a filled tensor of the input's shape; ONNX
    // Runtime broadcasts such a Mul slowly and the filled tensor costs a pass of its own: Expand (and a scalar Mul).
    const o = out(c);
    for (const [k, other] of [
      ["b", "a"],
      ["a", "b"],
    ] as const) {
      const u = c.uniform(k);
      if (u === undefined || o.dtype !== "float32") continue;
      const v = c.inputValue(other);
      const full = v.shape.length === o.shape.length && v.shape.every((d, i) => d === o.shape[i]);
      const x = full ? c.input(other) : c.g.node("Expand", [c.input(other), c.g.int64s("shape", o.shape)]);
      return [
        u === 1 ? (full ? c.g.node("Identity", [x]) : x) : c.g.node("Mul", [x, scalarOf(c.g, u, "float32")]),
      ];
    }
    return [c.g.node("Mul", [c.input("a"), c.input("b")])];
  },
  RealDiv: binary("Div"),
  Maximum: binary("Max"),
  Minimum: binary("Min"),
  Pow: binary("Pow"),
  Equal: binary("Equal"),
  Less: binary("Less"),
  LessEqual: binary("LessOrEqual"),
  Greater: binary("Greater"),
  GreaterEqual: binary("GreaterOrEqual"),
  LogicalAnd: binary("And"),
  LogicalOr: binary("Or"),
  SquaredDifference: (c) => {
    const d = c.g.node("Sub", [c.input("a"), c.input("b")]);
    return [c.g.node("Mul", [d, d])];
  },
  AddN: (c) => [
    c.g.node(
      "Sum",
      c.kernel.inputs.map(([k]) => c.input(k)),
    ),
  ],
  Neg: one("Neg"),
  Exp: one("Exp"),
  Log: one("Log"),
  Sqrt: one("Sqrt"),
  Rsqrt: (c) => [c.g.node("Reciprocal", [c.g.node("Sqrt", [c.input("x")])])],
  Reciprocal: one("Reciprocal"),
  Square: (c) => [c.g.node("Mul", [c.input("x"), c.input("x")])],
  Abs: one("Abs"),
  Sign: one("Sign"),
  Sigmoid: one("Sigmoid"),
  Tanh: one("Tanh"),
  Erf: one("Erf"),
  Cos: one("Cos"),
  Asin: one("Asin"),
  Sin: one("Sin"),
  Floor: one("Floor"),
  Relu: one("Relu"),
  LogicalNot: one("Not"),
  // tfjs's step (ReLU's gradient): 1 where x > 0, else alpha.
  Step: (c) => {
    const dt = c.inputValue("x").dtype;
    const pos = c.g.node("Greater", [c.input("x"), scalarOf(c.g, 0, dt)]);
    return [
      c.g.node("Where", [
        pos,
        scalarOf(c.g, 1, dt),
        scalarOf(c.g, (c.kernel.attrs.alpha as number) ?? 0, dt),
      ]),
    ];
  },
  ClipByValue: (c) => {
    const dt = c.inputValue("x").dtype;
    const a = c.kernel.attrs;
    return [
      c.g.node("Clip", [
        c.input("x"),
        scalarOf(c.g, a.clipValueMin as number, dt),
        scalarOf(c.g, a.clipValueMax as number, dt),
      ]),
    ];
  },
  Select: (c) => [c.g.node("Where", [c.input("condition"), c.input("t"), c.input("e")])],
  OnesLike: (c) => [c.g.node("Expand", [scalarOf(c.g, 1, out(c).dtype), c.g.int64s("shape", out(c).shape)])],
  ZerosLike: (c) => [c.g.node("Expand", [scalarOf(c.g, 0, out(c).dtype), c.g.int64s("shape", out(c).shape)])],
  Fill: (c) => [
    c.g.node("Expand", [
      scalarOf(c.g, c.kernel.attrs.value as number, out(c).dtype),
      c.g.int64s("shape", out(c).shape),
    ]),
  ],
  Sum: reduce("ReduceSum", "axis"),
  Mean: reduce("ReduceMean", "axis"),
  Max: reduce("ReduceMax", "reductionIndices"),
  Min: reduce("ReduceMin", "axis"),
  Transpose: (c) => [c.g.node("Transpose", [c.input("x")], { perm: c.kernel.attrs.perm as number[] })],
  BatchMatMul: (c) => {
    const a = c.kernel.attrs;
    const side = (key: "a" | "b", t: unknown) => {
      const v = c.input(key);
      const rank = c.inputValue(key).shape.length;
      if (!t) return v;
      const perm = Array.from({ length: rank }, (_, i) => i);
      [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1]!, perm[rank - 2]!];
      return c.g.node("Transpose", [v], { perm });
    };
    return [c.g.node("MatMul", [side("a", a.transposeA), side("b", a.transposeB)])];
  },
  Conv2D: conv2d,
  Conv2DBackpropFilter: conv2dFilterGrad,
  PadV2: (c) => {
    const pads = c.kernel.attrs.paddings as [number, number][];
    const flat = [...pads.map((p) => p[0]), ...pads.map((p) => p[1])];
    const value = scalarOf(c.g, (c.kernel.attrs.constantValue as number) ?? 0, c.inputValue("x").dtype);
    return [c.g.node("Pad", [c.input("x"), c.g.int64s("pads", flat), value], { mode: "constant" })];
  },
  Tile: (c) => [c.g.node("Tile", [c.input("x"), c.g.int64s("reps", c.kernel.attrs.reps as number[])])],
  Reverse: (c) => {
    const x = c.inputValue("x");
    const axes = axesOf(c.kernel.attrs.dims, x.shape.length);
    if (axes.length === 0) return [c.g.node("Identity", [c.input("x")])];
    // ONNX has no Reverse: a Slice with step −1 from the last element to before the first.
    const g = c.g;
    return [
      g.node("Slice", [
        c.input("x"),
        g.int64s(
          "starts",
          axes.map(() => -1),
        ),
        g.int64s(
          "ends",
          axes.map((a) => -x.shape[a]! - 1),
        ),
        g.int64s("axes", axes),
        g.int64s(
          "steps",
          axes.map(() => -1),
        ),
      ]),
    ];
  },
  Concat: (c) => {
    const rank = out(c).shape.length;
    const axis = axesOf(c.kernel.attrs.axis, rank)[0]!;
    return [
      c.g.node(
        "Concat",
        c.kernel.inputs.map(([k]) => c.input(k)),
        { axis },
      ),
    ];
  },
  SplitV: (c) => {
    const x = c.inputValue("x");
    const axis = axesOf(c.kernel.attrs.axis, x.shape.length)[0]!;
    const sizes = c.kernel.outputs.map((o) => o.shape[axis]!);
    return c.g.nodeN("Split", [c.input("x"), c.g.int64s("split", sizes)], sizes.length, { axis });
  },
  Slice: (c) => {
    const begin = c.kernel.attrs.begin as number[];
    const shape = out(c).shape;
    const g = c.g;
    return [
      g.node("Slice", [
        c.input("x"),
        g.int64s("starts", begin),
        g.int64s(
          "ends",
          begin.map((b, i) => b + shape[i]!),
        ),
        g.int64s(
          "axes",
          begin.map((_, i) => i),
        ),
      ]),
    ];
  },
  Softmax: (c) => {
    const rank = c.inputValue("logits").shape.length;
    const axis = axesOf(c.kernel.attrs.dim ?? -1, rank)[0]!;
    return [c.g.node("Softmax", [c.input("logits")], { axis })];
  },
  GatherV2: (c) => {
    if (c.kernel.attrs.batchDims) throw new Error("GatherV2: batchDims > 0 is not supported");
    const axis = axesOf(c.kernel.attrs.axis, c.inputValue("x").shape.length)[0]!;
    return [c.g.node("Gather", [c.input("x"), c.input("indices")], { axis })];
  },
  ScatterNd: (c) => {
    // tfjs sums updates that share an index; ScatterND does too with reduction "add" (opset 16+).
    const o = out(c);
    const g = c.g;
    const zeros = g.node("Expand", [scalarOf(g, 0, o.dtype), g.int64s("shape", o.shape)]);
    const idx = g.node("Cast", [c.input("indices")], { to: 7 });
    return [g.node("ScatterND", [zeros, idx, c.input("updates")], { reduction: "add" })];
  },
  OneHot: (c) => {
    // As indices[..., None] == range(depth): ONNX Runtime's CPU OneHot lacks most int32 type combinations.
    const a = c.kernel.attrs;
    const o = out(c);
    const g = c.g;
    const depth = a.depth as number;
    const idx = g.node("Cast", [c.input("indices")], { to: DType.int32 });
    const col = g.node("Unsqueeze", [idx, g.int64s("axes", [-1])]);
    const range = g.constant(
      "onehot_range",
      "int32",
      Array.from({ length: depth }, (_, i) => i),
      [depth],
    );
    const hit = g.node("Equal", [col, range]);
    return [
      g.node("Where", [
        hit,
        scalarOf(g, a.onValue as number, o.dtype),
        scalarOf(g, a.offValue as number, o.dtype),
      ]),
    ];
  },
  ResizeNearestNeighbor: (c) => {
    const x = c.inputValue("images");
    const o = out(c);
    const [sh, sw] = nearestFactors(c, x.shape, o.shape);
    const [b, h, w, ch] = x.shape as [number, number, number, number];
    const g = c.g;
    const r = g.node("Reshape", [c.input("images"), g.int64s("shape", [b, h, 1, w, 1, ch])]);
    const e = g.node("Expand", [r, g.int64s("shape", [b, h, sh, w, sw, ch])]);
    return [g.node("Reshape", [e, g.int64s("shape", o.shape)])];
  },
  ResizeNearestNeighborGrad: (c) => {
    const dy = c.inputValue("dy");
    const o = out(c);
    const [sh, sw] = nearestFactors(c, o.shape, dy.shape);
    const [b, h, w, ch] = o.shape as [number, number, number, number];
    const g = c.g;
    const r = g.node("Reshape", [c.input("dy"), g.int64s("shape", [b, h, sh, w, sw, ch])]);
    return [g.node("ReduceSum", [r, g.int64s("axes", [2, 4])], { keepdims: 0 })];
  },
};

export function hasEmitter(kernel: string): boolean {
  return kernel in EMITTERS;
}

/** Emits one traced kernel's nodes; returns the ONNX names of its outputs in order. */
export function emitKernel(c: EmitContext): string[] {
  const e = EMITTERS[c.kernel.name];
  if (!e) throw new Error(`ONNX replay: TensorFlow.js kernel '${c.kernel.name}' has no ONNX translation`);
  const outs = e(c);
  if (outs.length !== c.kernel.outputs.length) {
    throw new Error(
      `ONNX replay: ${c.kernel.name} gave ${outs.length} outputs, the trace has ${c.kernel.outputs.length}`,
    );
  }
  return outs;
}
