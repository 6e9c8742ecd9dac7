// Exports the repository's UNet (src/nets/unet.ts) to ONNX by walking its modules (no kernel tracing): inputs
// x NHWC [B, H, W, C] float, t [B] float, and by model kind: text-conditional tokens [B, ctx] int32 and mask
// [B, ctx] float (1 = real token); class-conditional y [B] int32; inpainting inpaint_image [B, H, W, C] and
// inpaint_mask [B, H, W, 1]; super-resolution low_res [B, h, w, C]. Output NHWC [B, H, W, outChannels].
// Activations are NCHW inside the graph.
import { expf32 } from "../core/expf32.ts";
import { type Perturbation, SEG_INFINITE_SIGMA, segKernel } from "../nets/perturb.ts";
import type { TextTransformer } from "../nets/text-transformer.ts";
import {
  AttentionBlock,
  type Block,
  ConvBlock,
  ResBlock,
  type ResolvedPerturbation,
  type Sequential,
  type UNet,
  type UNetConfig,
  unetInputChannels,
} from "../nets/unet.ts";
import * as E from "./emit.ts";
import { Graph } from "./graph.ts";

export interface ExportShapes {
  /**
   * Rows per call, or "dynamic": a symbolic batch dimension (every Reshape then copies the leading dimension with
   * ONNX's 0), so one file serves every batch size (the browser explorer ships one file per model).
   */
  batch: number | "dynamic";
  /** Defaults to the model's imageSize. */
  height?: number;
  width?: number;
  /**
   * Super-resolution models: the low-res input's size. Required there, because the bilinear upsampling to the
   * model's size is part of the graph and ONNX shapes are fixed per session.
   */
  lowResHeight?: number;
  lowResWidth?: number;
  /** Store float16-exact weights as float16 (Graph.serialize's halfExact): same values, about half the bytes. */
  halfWeights?: boolean;
}

interface Img {
  v: string;
  c: number;
  h: number;
  w: number;
}

interface Ctx {
  b: number;
  emb: string;
  /** Text encoder output [B, L, width]. */
  enc?: { v: string; l: number; width: number };
  /** Blocks to perturb (nets/perturb.ts), exported into this graph. */
  perturb?: ResolvedPerturbation;
}

/** Slice of `x` along one axis, [from, to). */
function slice(g: Graph, x: string, axis: number, from: number, to: number): string {
  return g.node("Slice", [x, g.int64s("st", [from]), g.int64s("en", [to]), g.int64s("ax", [axis])]);
}

/** PAG's identity attention (perturb.ts) on the column layout: q [B, heads, ch, T], k, v [B, heads, ch, L + T]. */
function identityAttentionCols(g: Graph, q: string, k: string, v: string, ch: number, t: number, l: number) {
  const vImage = l ? slice(g, v, 3, l, l + t) : v;
  if (!l) return vImage;
  const s = g.scalar("attn_scale", 1 / Math.sqrt(Math.sqrt(ch)));
  const qt = E.transpose(g, E.mul(g, q, s), [0, 1, 3, 2]);
  const w = g.node("Softmax", [g.node("MatMul", [qt, E.mul(g, k, s)])], { axis: -1 }); // [B, H, T, L + T]
  const pText = slice(g, w, 3, 0, l);
  const textOut = g.node("MatMul", [slice(g, v, 3, 0, l), E.transpose(g, pText, [0, 1, 3, 2])]);
  const mass = E.transpose(
    g,
    g.node("ReduceSum", [pText, g.int64s("axes", [3])], { keepdims: 1 }),
    [0, 1, 3, 2],
  );
  const self = g.node("Sub", [g.scalar("one", 1), mass]);
  return E.add(g, textOut, E.mul(g, self, vImage));
}

/** SEG's query smoothing (perturb.ts) on q [B, heads, ch, T] of an h×w grid. */
function smoothQueriesCols(g: Graph, q: string, shape: number[], hgt: number, wid: number, sigma: number) {
  if (sigma >= SEG_INFINITE_SIGMA) {
    return g.node("Expand", [
      g.node("ReduceMean", [q], { axes: [3], keepdims: 1 }),
      g.int64s("shape", shape),
    ]);
  }
  const [b, heads, ch] = shape as [number, number, number];
  const c = heads * ch;
  const k1 = segKernel(sigma, Math.min(hgt, wid));
  const k = k1.length;
  const p = Math.floor(k / 2);
  const taps = Array.from({ length: c }, () =>
    Array.from(k1).flatMap((a) => Array.from(k1, (v) => a * v)),
  ).flat();
  const grid = E.reshape(g, q, [b, c, hgt, wid]);
  const padded = g.node("Pad", [grid, g.int64s("pads", [0, 0, p, p, 0, 0, p, p])], { mode: "reflect" });
  const blurred = g.node("Conv", [padded, g.floats("seg_w", taps, [c, 1, k, k])], {
    kernel_shape: [k, k],
    group: c,
  });
  return E.reshape(g, blurred, shape);
}

/** Frequencies of layers.ts timestepEmbedding, formed identically (float32 op by op). */
export function timestepFreqs(dim: number, maxPeriod = 10000): Float32Array {
  const half = Math.floor(dim / 2);
  const negLog = Math.fround(-Math.log(maxPeriod));
  return Float32Array.from({ length: half }, (_, i) => expf32(Math.fround(Math.fround(negLog * i) / half)));
}

function resBlock(g: Graph, m: ResBlock, x: Img, ctx: Ctx): Img {
  let h = E.silu(g, E.groupNorm(g, m.inNorm, x.v, [ctx.b, x.c, x.h, x.w]));
  let xv = x.v;
  let hh = x.h;
  let ww = x.w;
  if (m.updown === "up") {
    h = E.upsample2x(g, h);
    xv = E.upsample2x(g, xv);
    hh *= 2;
    ww *= 2;
  } else if (m.updown === "down") {
    h = E.avgPool2x(g, h);
    xv = E.avgPool2x(g, xv);
    hh = Math.floor(hh / 2);
    ww = Math.floor(ww / 2);
  }
  h = E.conv2d(g, m.inConv, h, hh, ww);
  const oc = m.outChannels;
  const e = E.linear(g, m.embLinear, E.silu(g, ctx.emb));
  const shape = [ctx.b, oc, hh, ww];
  if (m.useScaleShiftNorm) {
    const [scale, shift] = E.split(g, e, 1, [oc, oc]) as [string, string];
    const s = E.reshape(g, scale, [ctx.b, oc, 1, 1]);
    const t = E.reshape(g, shift, [ctx.b, oc, 1, 1]);
    const n = E.groupNorm(g, m.outNorm, h, shape);
    h = E.add(g, E.mul(g, n, E.add(g, s, g.scalar("one", 1))), t);
  } else {
    h = E.groupNorm(g, m.outNorm, E.add(g, h, E.reshape(g, e, [ctx.b, oc, 1, 1])), shape);
  }
  h = E.conv2d(g, m.outConv, E.silu(g, h), hh, ww);
  const skip = m.skip ? E.conv2d(g, m.skip, xv, hh, ww) : xv;
  return { v: E.add(g, skip, h), c: oc, h: hh, w: ww };
}

function attentionBlock(g: Graph, m: AttentionBlock, x: Img, ctx: Ctx): Img {
  const { b } = ctx;
  const { c, h, w } = x;
  const heads = m.heads;
  const ch = c / heads;
  const t = h * w;
  const qkv = E.conv2d(g, m.qkv, E.groupNorm(g, m.norm, x.v, [b, c, h, w]), h, w); // [B, 3C, H, W]
  let q: string;
  let k: string;
  let v: string;
  if (!m.newOrder) {
    [q, k, v] = E.split(g, E.reshape(g, qkv, [b, heads, 3 * ch, t]), 2, [ch, ch, ch]) as [
      string,
      string,
      string,
    ];
  } else {
    const parts = E.split(g, E.reshape(g, qkv, [b, 3 * c, t]), 1, [c, c, c]);
    [q, k, v] = parts.map((p) => E.reshape(g, p, [b, heads, ch, t])) as [string, string, string];
  }
  if (m.encoderKv && ctx.enc) {
    const { l, width } = ctx.enc;
    // The 1×1 conv over [B, 1, L, width] is a linear on the last axis with the [width, 2C] filter.
    const wt = g.floats("ekv_w", Float32Array.from(m.encoderKv.weight.dataSync()), [width, 2 * c]);
    let e = g.node("MatMul", [ctx.enc.v, wt]);
    if (m.encoderKv.bias) e = E.add(g, e, g.tensor("ekv_b", m.encoderKv.bias));
    // [B, L, heads, 2ch] → [B, heads, 2ch, L], per head k|v consecutive (splitHeads perHead=true).
    const et = E.transpose(g, E.reshape(g, e, [b, l, heads, 2 * ch]), [0, 2, 3, 1]);
    const [ek, ev] = E.split(g, et, 2, [ch, ch]) as [string, string];
    k = E.concat(g, [ek, k], 3);
    v = E.concat(g, [ev, v], 3);
  }
  const p = ctx.perturb?.get(m);
  const l = m.encoderKv && ctx.enc ? ctx.enc.l : 0;
  const attended =
    p?.op === "identity-attention"
      ? identityAttentionCols(g, q, k, v, ch, t, l)
      : E.attentionCols(
          g,
          p?.op === "smoothed-queries" ? smoothQueriesCols(g, q, [b, heads, ch, t], h, w, p.sigma!) : q,
          k,
          v,
          ch,
        );
  const a = E.reshape(g, attended, [b, c, h, w]);
  return { v: E.add(g, x.v, E.conv2d(g, m.projOut, a, h, w)), c, h, w };
}

function block(g: Graph, m: Block, x: Img, ctx: Ctx): Img {
  if (m instanceof ResBlock) return resBlock(g, m, x, ctx);
  if (m instanceof AttentionBlock) return attentionBlock(g, m, x, ctx);
  if (m instanceof ConvBlock)
    return { v: E.conv2d(g, m.conv, x.v, x.h, x.w), c: m.conv.weight.shape[3]!, h: x.h, w: x.w };
  throw new Error(`onnx export: unsupported block ${m.constructor.name}`);
}

function sequential(g: Graph, s: Sequential, x: Img, ctx: Ctx): Img {
  for (const m of s.blocks) if (ctx.perturb?.get(m)?.op !== "skip") x = block(g, m, x, ctx);
  return x;
}

/** GLIDE's text encoder: returns xfProj [B, embDim] and xfOut [B, ctx, width]. */
export function textEncoder(
  g: Graph,
  m: TextTransformer,
  tokens: string,
  mask: string,
  b: number,
): { xfProj: string; xfOut: string } {
  const { ctx: t, width, heads } = m.config;
  let x = E.add(
    g,
    E.embedding(g, g.tensor("tok_emb", m.tokenEmbedding.weight), tokens),
    g.tensor("pos", m.positional),
  );
  if (m.paddingEmbedding) {
    const cond = g.node("Cast", [E.reshape(g, mask, [b, t, 1])], { to: 9 });
    x = g.node("Where", [cond, x, g.tensor("pad_emb", m.paddingEmbedding)]);
  }
  const ch = width / heads;
  for (const blk of m.blocks) {
    const qkv = E.linear(g, blk.cQkv, E.layerNorm(g, blk.ln1, x));
    const [q, k, v] = E.split(g, E.reshape(g, qkv, [b, t, heads, 3 * ch]), 3, [ch, ch, ch]).map((p) =>
      E.transpose(g, p, [0, 2, 1, 3]),
    ) as [string, string, string];
    const a = E.reshape(g, E.transpose(g, E.attentionRows(g, q, k, v, ch), [0, 2, 1, 3]), [b, t, width]);
    x = E.add(g, x, E.linear(g, blk.attnProj, a));
    x = E.add(g, x, E.linear(g, blk.mlpProj, E.gelu(g, E.linear(g, blk.cFc, E.layerNorm(g, blk.ln2, x)))));
  }
  if (m.finalLn) x = E.layerNorm(g, m.finalLn, x);
  const last = E.reshape(g, g.node("Gather", [x, g.int64s("last", [t - 1], [])], { axis: 1 }), [b, width]);
  return { xfProj: E.linear(g, m.proj, last), xfOut: x };
}

/**
 * The first conv's input, NCHW: x, then [image·mask, mask] for inpainting, then the low-res image upsampled
 * bilinearly (half-pixel centres, PyTorch's align_corners=False), the order of UNet.modelInput.
 */
function modelInput(
  g: Graph,
  cfg: UNetConfig,
  b: number | string,
  hgt: number,
  wid: number,
  shapes: ExportShapes,
): string {
  const c = cfg.inChannels;
  const x = g.input("x", "float", [b, hgt, wid, c]);
  if (!cfg.inpaint && !cfg.superRes) return E.toNCHW(g, x);
  const parts = [E.toNCHW(g, x)];
  if (cfg.inpaint) {
    const image = g.input("inpaint_image", "float", [b, hgt, wid, c]);
    const mask = g.input("inpaint_mask", "float", [b, hgt, wid, 1]);
    parts.push(E.toNCHW(g, E.mul(g, image, mask)), E.toNCHW(g, mask));
  }
  if (cfg.superRes) {
    const { lowResHeight: lh, lowResWidth: lw } = shapes;
    if (typeof b !== "number")
      throw new Error(
        "onnx export: a super-resolution UNet needs a fixed batch (its resize names every dimension)",
      );
    if (lh === undefined || lw === undefined)
      throw new Error("onnx export: a super-resolution UNet needs lowResHeight and lowResWidth");
    const low = E.toNCHW(g, g.input("low_res", "float", [b, lh, lw, c]));
    parts.push(E.resizeBilinear(g, low, [b, c, hgt, wid]));
  }
  return E.concat(g, parts, 1);
}

/**
 * The whole UNet as ONNX ModelProto bytes, for a fixed batch size and image size; with `perturbation`, the
 * perturbed graph (one per configuration: callers cache by perturbationKey).
 */
export function exportUNet(unet: UNet, shapes: ExportShapes, perturbation?: Perturbation): Uint8Array {
  const cfg = unet.config;
  if (shapes.batch === "dynamic" && perturbation)
    throw new Error("onnx export: a perturbed graph needs a fixed batch (its Expand names every dimension)");
  // 0 in a Reshape target copies the input's dimension; the batch always leads, so 0 stands for it throughout.
  const b = shapes.batch === "dynamic" ? 0 : shapes.batch;
  const bDim = shapes.batch === "dynamic" ? "batch" : shapes.batch;
  const hgt = shapes.height ?? cfg.imageSize;
  const wid = shapes.width ?? cfg.imageSize;
  const g = new Graph();
  const xNCHW = modelInput(g, cfg, bDim, hgt, wid, shapes);
  const tIn = g.input("t", "float", [bDim]);
  const mc = cfg.modelChannels;
  if (mc % 2) throw new Error("onnx export: odd modelChannels are not supported");
  let emb = E.timestepEmbedding(g, tIn, timestepFreqs(mc));
  emb = E.linear(g, unet.timeEmbed2, E.silu(g, E.linear(g, unet.timeEmbed0, emb)));
  // Same addition order as UNet.embed (time, then label, then text), so float32 rounding matches.
  if (unet.labelEmb) {
    const y = g.input("y", "int32", [bDim]);
    emb = E.add(g, emb, E.embedding(g, g.tensor("label_emb", unet.labelEmb.weight), y));
  }
  const ctx: Ctx = { b, emb };
  if (perturbation) ctx.perturb = unet.resolvePerturbation(perturbation);
  if (unet.text) {
    const tc = unet.text.config;
    const tokens = g.input("tokens", "int32", [bDim, tc.ctx]);
    const mask = g.input("mask", "float", [bDim, tc.ctx]);
    const { xfProj, xfOut } = textEncoder(g, unet.text, tokens, mask, b);
    ctx.emb = E.add(g, emb, xfProj);
    ctx.enc = { v: xfOut, l: tc.ctx, width: tc.width };
  }
  let h: Img = { v: xNCHW, c: unetInputChannels(cfg), h: hgt, w: wid };
  const hs: Img[] = [];
  for (const s of unet.inputBlocks) {
    h = sequential(g, s, h, ctx);
    hs.push(h);
  }
  h = sequential(g, unet.middle, h, ctx);
  for (const s of unet.outputBlocks) {
    const skip = hs.pop()!;
    h = sequential(g, s, { v: E.concat(g, [h.v, skip.v], 1), c: h.c + skip.c, h: h.h, w: h.w }, ctx);
  }
  const n = E.silu(g, E.groupNorm(g, unet.outNorm, h.v, [b, h.c, h.h, h.w]));
  const out = E.toNHWC(g, E.conv2d(g, unet.outConv, n, h.h, h.w));
  g.identity(out, "out");
  g.output("out", "float", [bDim, hgt, wid, cfg.outChannels]);
  return g.serialize({ halfExact: shapes.halfWeights ?? false });
}
