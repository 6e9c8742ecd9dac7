// GLIDE's noised CLIP (src/nets/clip.ts) to ONNX, one graph per tower, for forward-only uses (embedding
// samples and prompts for metrics; guidance itself differentiates the image tower in TensorFlow.js):
//   image: x NHWC [B, S, S, 3] in [-1, 1], t [B] int32 (original timesteps) → z_i [B, nEmbd], unit norm;
//   text:  tokens [B, maxTextLen] int32, lens [B] int32 (1..maxTextLen) → z_t [B, nEmbd], unit norm.
// The official code pads the context to a multiple of 32 after the projections and masks pad keys with -1e10;
// exp(-1e10 - max) is exactly 0 in float32, so the graph runs on the real context alone (text: the causal bias
// of its T×T block), which changes no value beyond summation order.
import type { ClipModel } from "../nets/clip.ts";
import * as E from "./emit.ts";
import { Graph } from "./graph.ts";

// CLIP's pixel statistics (src/nets/clip.ts), applied after mapping [-1, 1] to [0, 255].
const IMAGE_MEANS = [122.77093945, 116.74601272, 104.09373519];
const IMAGE_STDS = [68.50053285, 66.63215831, 70.32316309];
const MASKED = -1e10;

type Block = ClipModel["text"]["blocks"][number];

/** Pre-LN attention (k without bias) and MLP blocks on [B, T, width]; `bias` an additive [T, T] mask or none. */
function blocks(g: Graph, list: readonly Block[], x: string, b: number, t: number, bias?: string): string {
  for (const blk of list) {
    const at = blk.fAttn;
    const heads = at.nHeads;
    const d = at.nState / heads;
    const r = E.layerNorm(g, at.ln, x);
    const split = (v: string) => E.transpose(g, E.reshape(g, v, [b, t, heads, d]), [0, 2, 1, 3]);
    const q = split(E.linear(g, at.fQ, r));
    const k = split(E.linear(g, at.fK, r));
    const v = split(E.linear(g, at.fV, r));
    const s = g.scalar("attn_scale", 1 / Math.sqrt(Math.sqrt(d)));
    let w = g.node("MatMul", [E.mul(g, q, s), E.transpose(g, E.mul(g, k, s), [0, 1, 3, 2])]);
    if (bias) w = E.add(g, w, bias);
    const a = g.node("MatMul", [g.node("Softmax", [w], { axis: -1 }), v]);
    x = E.add(g, x, E.linear(g, at.fC, E.reshape(g, E.transpose(g, a, [0, 2, 1, 3]), [b, t, at.nState])));
    const mlp = blk.fMlp;
    x = E.add(g, x, E.linear(g, mlp.f2, E.gelu(g, E.linear(g, mlp.f1, E.layerNorm(g, mlp.ln, x)))));
  }
  return x;
}

/** z = v / (‖v‖ + 1e-12), the official normalisation. */
function normalize(g: Graph, v: string): string {
  const norm = g.node("Sqrt", [
    g.node("ReduceSum", [E.mul(g, v, v), g.int64s("axes", [1])], { keepdims: 1 }),
  ]);
  return g.node("Div", [v, E.add(g, norm, g.scalar("eps", 1e-12))]);
}

/** The image tower at a fixed batch size. */
export function exportClipImage(model: ClipModel, batch: number): Uint8Array {
  const c = model.config;
  const b = batch;
  const s = c.imageSize;
  const input = model.image.input;
  if (!("wT" in input)) throw new Error("onnx export: the CLIP image tower has no image embedding");
  const width = input.nState;
  const g = new Graph();
  const x = g.input("x", "float", [b, s, s, 3]);
  const t = g.input("t", "int32", [b]);
  // ((x + 1)·127.5 − mean) / std per channel, in the order clip.ts computes it.
  const pixels = E.mul(g, E.add(g, x, g.scalar("one", 1)), g.scalar("half255", 127.5));
  const norm = g.node("Div", [
    g.node("Sub", [pixels, g.floats("mean", IMAGE_MEANS, [3])]),
    g.floats("std", IMAGE_STDS, [3]),
  ]);
  let img = E.toNCHW(g, norm);
  for (const conv of input.stem) img = E.gelu(g, E.conv2d(g, conv, img, s, s));
  const patches = E.conv2d(g, input.patchProj, img, s, s); // [B, width, S/p, S/p]
  const n = (s / c.patchSize) ** 2;
  const seq = E.transpose(g, E.reshape(g, patches, [b, width, n]), [0, 2, 1]); // [B, n, width]
  const sot = E.reshape(g, E.embedding(g, g.tensor("w_t", input.wT.weight), t), [b, 1, width]);
  const tokens = E.add(g, E.concat(g, [sot, seq], 1), g.tensor("w_pos", input.wPos));
  let h = E.layerNorm(g, input.ln, tokens);
  h = blocks(g, model.image.blocks, h, b, n + 1);
  const first = E.reshape(g, g.node("Gather", [h, g.int64s("first", [0], [])], { axis: 1 }), [b, width]);
  const out = model.image.output;
  g.identity(normalize(g, E.linear(g, out.f, E.layerNorm(g, out.ln, first))), "z");
  g.output("z", "float", [b, c.nEmbd]);
  return g.serialize();
}

/** The text tower at a fixed batch size; each row's feature is taken at position lens − 1. */
export function exportClipText(model: ClipModel, batch: number): Uint8Array {
  const c = model.config;
  const b = batch;
  const t = c.maxTextLen;
  const input = model.text.input;
  if (!("wVoc" in input)) throw new Error("onnx export: the CLIP text tower has no token embedding");
  const width = c.nHeadText * c.nHeadStateText;
  const g = new Graph();
  const tokens = g.input("tokens", "int32", [b, t]);
  const lens = g.input("lens", "int32", [b]);
  const x = E.add(
    g,
    E.embedding(g, g.tensor("w_voc", input.wVoc.weight), tokens),
    g.tensor("w_pos", input.wPos),
  );
  const causal = Float32Array.from({ length: t * t }, (_, i) => (i % t <= Math.floor(i / t) ? 0 : MASKED));
  const h = blocks(g, model.text.blocks, x, b, t, g.floats("causal", causal, [t, t]));
  // Flat row of each prompt's last real token: i·T + lens_i − 1.
  const rows = E.add(
    g,
    g.int64s(
      "row0",
      Array.from({ length: b }, (_, i) => i * t - 1),
    ),
    g.node("Cast", [lens], { to: 7 }),
  );
  const last = g.node("Gather", [E.reshape(g, h, [b * t, width]), rows], { axis: 0 });
  const out = model.text.output;
  g.identity(normalize(g, E.linear(g, out.f, E.layerNorm(g, out.ln, last))), "z");
  g.output("z", "float", [b, c.nEmbd]);
  return g.serialize();
}
