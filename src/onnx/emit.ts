// Per-primitive ONNX emitters mirroring src/core/layers.ts. Image activations inside the graph are NCHW (ONNX's
// conv layout); the NHWC↔NCHW transposes happen once at the graph boundary (`toNCHW`/`toNHWC`). Sequence
// activations ([B, T, C]) keep their layout. Every function takes value names and returns the output's name.
import type { Conv2d, GroupNorm, LayerNorm, Linear } from "../core/layers.ts";
import { resolvePads } from "../core/ops.ts";
import { type Graph, permute } from "./graph.ts";

export function toNCHW(g: Graph, x: string): string {
  return g.node("Transpose", [x], { perm: [0, 3, 1, 2] });
}

export function toNHWC(g: Graph, x: string): string {
  return g.node("Transpose", [x], { perm: [0, 2, 3, 1] });
}

export function reshape(g: Graph, x: string, shape: number[]): string {
  return g.node("Reshape", [x, g.int64s("shape", shape)]);
}

export function transpose(g: Graph, x: string, perm: number[]): string {
  return g.node("Transpose", [x], { perm });
}

export function split(g: Graph, x: string, axis: number, sizes: number[]): string[] {
  return g.nodeN("Split", [x, g.int64s("split", sizes)], sizes.length, { axis });
}

export function concat(g: Graph, xs: string[], axis: number): string {
  return g.node("Concat", xs, { axis });
}

export function add(g: Graph, a: string, b: string): string {
  return g.node("Add", [a, b]);
}

export function mul(g: Graph, a: string, b: string): string {
  return g.node("Mul", [a, b]);
}

/** Conv2d on NCHW with the layer's [k, k, in, out] filter stored as OIHW and its padding resolved for size h×w. */
export function conv2d(g: Graph, m: Conv2d, x: string, h: number, w: number): string {
  const [k] = m.weight.shape as [number, number, number, number];
  const [wd, dims] = permute(m.weight.dataSync() as Float32Array, m.weight.shape, [3, 2, 0, 1]);
  const p = resolvePads(h, w, k, m.stride, m.padding);
  const inputs = [x, g.floats("conv_w", wd, dims)];
  if (m.bias) inputs.push(g.tensor("conv_b", m.bias));
  return g.node("Conv", inputs, {
    kernel_shape: [k, k],
    strides: [m.stride, m.stride],
    pads: [p.top, p.left, p.bottom, p.right],
  });
}

/** Linear on the last axis: MatMul with [in, out] + Add. */
export function linear(g: Graph, m: Linear, x: string): string {
  const y = g.node("MatMul", [x, g.tensor("lin_w", m.weight)]);
  return m.bias ? add(g, y, g.tensor("lin_b", m.bias)) : y;
}

/**
 * GroupNorm of a channels-first tensor ([B, C, ...], `shape` its full shape): reshape to [B, G, -1], mean/variance
 * by ReduceMean (opset 17 has no GroupNormalization op; it arrives in opset 18 and changes meaning in 21), then the
 * per-channel affine.
 */
export function groupNorm(g: Graph, m: GroupNorm, x: string, shape: number[]): string {
  const [b, c] = shape as [number, number];
  const grouped = reshape(g, x, [b, m.groups, -1]);
  const mean = g.node("ReduceMean", [grouped], { axes: [2], keepdims: 1 });
  const xc = g.node("Sub", [grouped, mean]);
  const variance = g.node("ReduceMean", [g.node("Mul", [xc, xc])], { axes: [2], keepdims: 1 });
  const inv = g.node("Reciprocal", [g.node("Sqrt", [add(g, variance, g.scalar("eps", m.eps))])]);
  const xn = reshape(g, mul(g, xc, inv), shape);
  const rest = shape.slice(2).map(() => 1);
  const wgt = g.floats("gn_w", Float32Array.from(m.weight.dataSync()), [c, ...rest]);
  const bias = g.floats("gn_b", Float32Array.from(m.bias.dataSync()), [c, ...rest]);
  return add(g, mul(g, xn, wgt), bias);
}

/** LayerNorm over the last axis (the opset-17 LayerNormalization op). */
export function layerNorm(g: Graph, m: LayerNorm, x: string): string {
  return g.node("LayerNormalization", [x, g.tensor("ln_w", m.weight), g.tensor("ln_b", m.bias)], {
    axis: -1,
    epsilon: { float: m.eps },
  });
}

export function silu(g: Graph, x: string): string {
  return mul(g, x, g.node("Sigmoid", [x]));
}

/** Exact GELU: 0.5·x·(1 + erf(x/√2)). */
export function gelu(g: Graph, x: string): string {
  const e = g.node("Erf", [mul(g, x, g.scalar("rsqrt2", Math.SQRT1_2))]);
  return mul(g, mul(g, x, g.scalar("half", 0.5)), add(g, e, g.scalar("one", 1)));
}

/** Nearest ×2 upsampling of NCHW. */
export function upsample2x(g: Graph, x: string): string {
  const scales = g.floats("scales", [1, 1, 2, 2], [4]);
  return g.node("Resize", [x, "", scales], {
    mode: "nearest",
    nearest_mode: "floor",
    coordinate_transformation_mode: "asymmetric",
  });
}

/**
 * Bilinear resize of NCHW to `sizes` with half-pixel centres (PyTorch's align_corners=False, TF's
 * halfPixelCenters): both clamp source coordinates below 0 to the first pixel, as ONNX Runtime's linear mode does.
 */
export function resizeBilinear(g: Graph, x: string, sizes: number[]): string {
  return g.node("Resize", [x, "", "", g.int64s("sizes", sizes)], {
    mode: "linear",
    coordinate_transformation_mode: "half_pixel",
  });
}

/** 2×2 average pooling, stride 2 (floor on odd sizes), NCHW. */
export function avgPool2x(g: Graph, x: string): string {
  return g.node("AveragePool", [x], { kernel_shape: [2, 2], strides: [2, 2] });
}

/** Row lookup of int ids into a [n, d] table. */
export function embedding(g: Graph, table: string, ids: string): string {
  return g.node("Gather", [table, ids], { axis: 0 });
}

/**
 * Timestep embedding (layers.ts timestepEmbedding): t float [B] times constant frequencies [1, half], then
 * [cos, sin] (+ a zero column for odd dims is not supported here: modelChannels are even).
 */
export function timestepEmbedding(g: Graph, t: string, freqs: Float32Array): string {
  const args = mul(
    g,
    g.node("Unsqueeze", [t, g.int64s("axes", [1])]),
    g.floats("freqs", freqs, [1, freqs.length]),
  );
  return concat(g, [g.node("Cos", [args]), g.node("Sin", [args])], 1);
}

/**
 * Attention with q, k, v as [B, H, T, d] ("rows") — q and k each scaled by d^-1/4, softmax over keys, output
 * [B, H, Tq, d].
 */
export function attentionRows(g: Graph, q: string, k: string, v: string, d: number): string {
  const s = g.scalar("attn_scale", 1 / Math.sqrt(Math.sqrt(d)));
  const kt = transpose(g, mul(g, k, s), [0, 1, 3, 2]);
  const w = g.node("MatMul", [mul(g, q, s), kt]);
  return g.node("MatMul", [g.node("Softmax", [w], { axis: -1 }), v]);
}

/**
 * Attention with q [B, H, d, Tq], k/v [B, H, d, Tk] ("columns", the NCHW-natural layout); output [B, H, d, Tq].
 */
export function attentionCols(g: Graph, q: string, k: string, v: string, d: number): string {
  const s = g.scalar("attn_scale", 1 / Math.sqrt(Math.sqrt(d)));
  const qt = transpose(g, mul(g, q, s), [0, 1, 3, 2]);
  const w = g.node("Softmax", [g.node("MatMul", [qt, mul(g, k, s)])], { axis: -1 }); // [B, H, Tq, Tk]
  return g.node("MatMul", [v, transpose(g, w, [0, 1, 3, 2])]);
}
