// Analytic FLOPs of one UNet forward (2 per multiply-accumulate), by walking the built modules with their shapes as
// the exporter does, so every config (text, class, inpainting, super-resolution) is counted from what it really
// runs. Counted: convolutions, linear layers and attention's matrix products; norms, activations, resizes and
// other pointwise ops are free in the count, as in the official code's FLOP counter whose totals the golden
// manifest records (meta.flops; test/bench.test.ts ties the two together).
import type { TextTransformer } from "../nets/text-transformer.ts";
import {
  AttentionBlock,
  type Block,
  ConvBlock,
  ResBlock,
  type UNet,
  unetInputChannels,
} from "../nets/unet.ts";

export interface FlopCount {
  /** 3×3 / 1×1 spatial convolutions (ResBlocks, the first and last conv). */
  conv: number;
  /** Attention's 1×1 projections (qkv, proj_out, encoder_kv): the official code's conv1d. */
  attnProj: number;
  /** q·kᵀ and weights·v of every attention (UNet and text transformer). */
  attnMatmul: number;
  /** Linear layers (time/label embedding MLP, ResBlock embedding projections, the text transformer). */
  linear: number;
  total: number;
}

interface Shape {
  c: number;
  h: number;
  w: number;
}

/** FLOPs of a UNet forward at batch b on h×w images. */
export function unetFlops(unet: UNet, b: number, h = unet.config.imageSize, w = h): FlopCount {
  const cfg = unet.config;
  const f: FlopCount = { conv: 0, attnProj: 0, attnMatmul: 0, linear: 0, total: 0 };
  const conv = (k: number, ci: number, co: number, ho: number, wo: number) =>
    2 * b * ho * wo * k * k * ci * co;
  const lin = (rows: number, i: number, o: number) => 2 * rows * i * o;
  const mc = cfg.modelChannels;
  const emb = 4 * mc;
  f.linear += lin(b, mc, emb) + lin(b, emb, emb);
  let textLen = 0;
  if (unet.text) {
    textLen = unet.text.config.ctx;
    textFlops(unet.text, b, f, lin);
  }
  const block = (m: Block, s: Shape): Shape => {
    if (m instanceof ResBlock) {
      let { h: hh, w: ww } = s;
      if (m.updown === "up") [hh, ww] = [2 * hh, 2 * ww];
      else if (m.updown === "down") [hh, ww] = [Math.floor(hh / 2), Math.floor(ww / 2)];
      const oc = m.outChannels;
      f.conv += conv(3, s.c, oc, hh, ww) + conv(3, oc, oc, hh, ww) + (m.skip ? conv(1, s.c, oc, hh, ww) : 0);
      f.linear += lin(b, emb, m.useScaleShiftNorm ? 2 * oc : oc);
      return { c: oc, h: hh, w: ww };
    }
    if (m instanceof AttentionBlock) {
      const t = s.h * s.w;
      const keys = t + (m.encoderKv && unet.text ? textLen : 0);
      f.attnProj += conv(1, s.c, 3 * s.c, s.h, s.w) + conv(1, s.c, s.c, s.h, s.w);
      if (m.encoderKv && unet.text) f.attnProj += lin(b * textLen, unet.text.config.width, 2 * s.c);
      // Per head: [t, ch]·[ch, keys] and [t, keys]·[keys, ch]; heads × ch = channels.
      f.attnMatmul += 2 * (2 * b * t * keys * s.c);
      return s;
    }
    if (m instanceof ConvBlock) {
      const oc = m.conv.weight.shape[3]!;
      f.conv += conv(3, s.c, oc, s.h, s.w);
      return { ...s, c: oc };
    }
    throw new Error(`flops: unsupported block ${m.constructor.name}`);
  };
  let s: Shape = { c: unetInputChannels(cfg), h, w };
  const skips: Shape[] = [];
  for (const seq of unet.inputBlocks) {
    for (const m of seq.blocks) s = block(m, s);
    skips.push(s);
  }
  for (const m of unet.middle.blocks) s = block(m, s);
  for (const seq of unet.outputBlocks) {
    const skip = skips.pop()!;
    s = { ...s, c: s.c + skip.c };
    for (const m of seq.blocks) s = block(m, s);
  }
  f.conv += conv(3, s.c, cfg.outChannels, s.h, s.w);
  f.total = f.conv + f.attnProj + f.attnMatmul + f.linear;
  return f;
}

function textFlops(
  m: TextTransformer,
  b: number,
  f: FlopCount,
  lin: (rows: number, i: number, o: number) => number,
): void {
  const { ctx: t, width } = m.config;
  const rows = b * t;
  for (let i = 0; i < m.blocks.length; i++) {
    f.linear += lin(rows, width, 3 * width) + lin(rows, width, width);
    f.linear += lin(rows, width, 4 * width) + lin(rows, 4 * width, width);
    f.attnMatmul += 2 * (2 * b * t * t * width);
  }
  // Only the last position is projected into the embedding.
  f.linear += lin(b, width, m.proj.weight.shape[1]!);
}
