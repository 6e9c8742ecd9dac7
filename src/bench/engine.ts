// Engine micro-benchmarks on the active backend: raw 3x3 conv throughput, the conv gradients (ours vs tf's own
// kernels), and a small conv UNet's training step and forward throughput. FLOPs are counted analytically
// (2 per multiply-accumulate of convolutions only; norms and pointwise ops are free in the count).
import type { BackendChoice, Scalar, Tensor, Tensor4D } from "../core/engine.ts";
import { initEngine, tf } from "../core/engine.ts";
import { Conv2d, GroupNorm, Init, Module, silu, upsampleNearest2x } from "../core/layers.ts";
import * as ops from "../core/ops.ts";

export interface Row {
  /** What was measured, e.g. "conv3x3 forward". */
  name: string;
  backend: string;
  /** Throughput in `unit` (GFLOP/s or eval/s). */
  value: number;
  unit: string;
  /** Mean wall time of one repetition, milliseconds. */
  ms: number;
  /** Shapes and counting notes. */
  detail: string;
}

interface Sizes {
  batch: number;
  res: number;
  ch: number;
  trainBatch: number;
  evalBatch: number;
  minMs: number;
}

function sizesFor(backend: string, quick: boolean): Sizes {
  if (quick) return { batch: 1, res: 8, ch: 8, trainBatch: 1, evalBatch: 2, minMs: 0 };
  // The pure-JS cpu backend is ~40x slower: smaller batches keep each row to a few seconds.
  if (backend === "cpu") return { batch: 2, res: 32, ch: 64, trainBatch: 1, evalBatch: 8, minMs: 0 };
  return { batch: 8, res: 32, ch: 64, trainBatch: 8, evalBatch: 8, minMs: 1500 };
}

/**
 * Runs `fn` once to warm up, then repeatedly until `minMs` has passed (at least once), disposing all but the last
 * result; one `await data()` at the end waits for any asynchronous backend to finish.
 */
async function timeIt(fn: () => Tensor[], minMs: number): Promise<number> {
  tf.dispose(fn());
  let reps = 0;
  let last: Tensor[] = [];
  const t0 = performance.now();
  do {
    tf.dispose(last);
    last = fn();
    reps++;
  } while (performance.now() - t0 < minMs);
  await last[0]?.data();
  const ms = (performance.now() - t0) / reps;
  tf.dispose(last);
  return ms;
}

function convFlops(b: number, ho: number, wo: number, k: number, ci: number, co: number): number {
  return 2 * b * ho * wo * k * k * ci * co;
}

class ResBlock extends Module {
  readonly n1: GroupNorm;
  readonly c1: Conv2d;
  readonly n2: GroupNorm;
  readonly c2: Conv2d;
  readonly skip: Conv2d | undefined;

  constructor(init: Init, inC: number, outC: number) {
    super();
    this.n1 = this.child("in_norm", new GroupNorm(Math.min(32, inC / 2), inC));
    this.c1 = this.child("in_conv", new Conv2d(init, inC, outC, 3));
    this.n2 = this.child("out_norm", new GroupNorm(Math.min(32, outC / 2), outC));
    this.c2 = this.child("out_conv", new Conv2d(init, outC, outC, 3));
    this.skip = inC !== outC ? this.child("skip", new Conv2d(init, inC, outC, 1)) : undefined;
  }

  forward(x: Tensor4D): Tensor4D {
    return tf.tidy(() => {
      const h = this.c2.forward(silu(this.n2.forward(this.c1.forward(silu(this.n1.forward(x))))));
      return tf.add(this.skip ? this.skip.forward(x) : x, h) as Tensor4D;
    });
  }
}

/** Two-level conv UNet: ResBlock, stride-2 conv, two ResBlocks, upsample + conv, skip concat, ResBlock, out conv. */
export class BenchUNet extends Module {
  readonly inConv: Conv2d;
  readonly rb1: ResBlock;
  readonly down: Conv2d;
  readonly rb2: ResBlock;
  readonly mid: ResBlock;
  readonly upConv: Conv2d;
  readonly rb3: ResBlock;
  readonly outNorm: GroupNorm;
  readonly outConv: Conv2d;

  constructor(
    init: Init,
    readonly ch: number,
    readonly imgC = 3,
  ) {
    super();
    this.inConv = this.child("in_conv", new Conv2d(init, imgC, ch, 3));
    this.rb1 = this.child("rb1", new ResBlock(init, ch, ch));
    this.down = this.child("down", new Conv2d(init, ch, ch, 3, { stride: 2, padding: 1 }));
    this.rb2 = this.child("rb2", new ResBlock(init, ch, ch));
    this.mid = this.child("mid", new ResBlock(init, ch, ch));
    this.upConv = this.child("up_conv", new Conv2d(init, ch, ch, 3));
    this.rb3 = this.child("rb3", new ResBlock(init, 2 * ch, ch));
    this.outNorm = this.child("out_norm", new GroupNorm(Math.min(32, ch / 2), ch));
    this.outConv = this.child("out_conv", new Conv2d(init, ch, imgC, 3));
  }

  forward(x: Tensor4D): Tensor4D {
    return tf.tidy(() => {
      const h1 = this.rb1.forward(this.inConv.forward(x));
      const h2 = this.mid.forward(this.rb2.forward(this.down.forward(h1)));
      const u = this.upConv.forward(upsampleNearest2x(h2));
      const h3 = this.rb3.forward(tf.concat([u, h1], 3) as Tensor4D);
      return this.outConv.forward(silu(this.outNorm.forward(h3)));
    });
  }

  /** Forward conv FLOPs per image at resolution r, and the part of it whose input gradient is not needed. */
  flopsPerImage(r: number): { forward: number; firstLayer: number } {
    const c = this.ch;
    const h = r / 2;
    const firstLayer = convFlops(1, r, r, 3, this.imgC, c);
    const rb = (res: number, i: number, o: number) =>
      convFlops(1, res, res, 3, i, o) +
      convFlops(1, res, res, 3, o, o) +
      (i !== o ? convFlops(1, res, res, 1, i, o) : 0);
    const forward =
      firstLayer +
      rb(r, c, c) +
      convFlops(1, h, h, 3, c, c) +
      2 * rb(h, c, c) +
      convFlops(1, r, r, 3, c, c) +
      rb(r, 2 * c, c) +
      convFlops(1, r, r, 3, c, this.imgC);
    return { forward, firstLayer };
  }
}

export async function benchEngine(opts: { backend?: string; quick?: boolean } = {}): Promise<Row[]> {
  if (opts.backend) await initEngine(opts.backend as BackendChoice, { quiet: true });
  else await initEngine(undefined, { quiet: true });
  const backend = tf.getBackend();
  const s = sizesFor(backend, opts.quick ?? false);
  const rows: Row[] = [];
  const init = new Init(0);
  const add = (name: string, flops: number, ms: number, detail: string) =>
    rows.push({ name, backend, value: flops / ms / 1e6, unit: "GFLOP/s", ms, detail });

  // (a) 3x3 conv forward, and the two gradients: ours vs tf's own kernels where the backend has them.
  const { batch: b, res: r, ch: c } = s;
  const x = init.normal([b, r, r, c], 1) as Tensor4D;
  const w = init.normal([3, 3, c, c], 0.05) as Tensor4D;
  const dy = init.normal([b, r, r, c], 1) as Tensor4D;
  const p = ops.resolvePads(r, r, 3, 1, "same");
  const f = convFlops(b, r, r, 3, c, c);
  const shape = `[${b},${r},${r},${c}] * [3,3,${c},${c}]`;
  add("conv3x3 forward", f, await timeIt(() => [ops.conv2d(x, w, 1, "same")], s.minMs), shape);
  const used = (which: "x" | "w", custom: boolean) =>
    ops.useCustomConvGrad(which) === custom ? ", used here" : "";
  const dxMs = await timeIt(() => [ops.convInputGrad(dy, w, x.shape, 1, p)], s.minMs);
  add("conv3x3 dx (ours)", f, dxMs, shape + used("x", true));
  const dwMs = await timeIt(() => [ops.convFilterGrad(x, dy, w.shape, 1, p)], s.minMs);
  add("conv3x3 dw (ours)", f, dwMs, shape + used("w", true));
  for (const [which, kernel] of [
    ["x", "Conv2DBackpropInput"],
    ["w", "Conv2DBackpropFilter"],
  ] as const) {
    if (!tf.getKernel(kernel, backend)) continue;
    const ms = await timeIt(() => [ops.nativeConvGrad(which, dy, x, w, 1, p)], s.minMs);
    add(`conv3x3 d${which} (tf ${kernel})`, f, ms, shape + used(which, false));
  }
  tf.dispose([x, w, dy]);

  // (b) training step and (c) forward throughput of the UNet.
  const net = new BenchUNet(init, c);
  const fl = net.flopsPerImage(r);
  const xt = init.normal([s.trainBatch, r, r, 3], 1) as Tensor4D;
  const target = init.normal([s.trainBatch, r, r, 3], 1);
  const params = net.parameters();
  const step = () => {
    const { value, grads } = tf.variableGrads(
      () => tf.mean(tf.squaredDifference(net.forward(xt), target)) as Scalar,
      params,
    );
    return [value, ...Object.values(grads)];
  };
  // Backward = input gradient (all but the first layer) + filter gradient (all layers), each one forward's FLOPs.
  const trainFlops = s.trainBatch * (3 * fl.forward - fl.firstLayer);
  add(
    "UNet train step",
    trainFlops,
    await timeIt(step, s.minMs),
    `batch ${s.trainBatch}, ${r}x${r}, ${c} ch, ${(net.numParams() / 1e6).toFixed(2)}M params, fwd+bwd, convs only`,
  );
  tf.dispose([xt, target]);

  const xe = init.normal([s.evalBatch, r, r, 3], 1) as Tensor4D;
  const evalMs = await timeIt(() => [net.forward(xe)], s.minMs);
  rows.push({
    name: "UNet forward",
    backend,
    value: (s.evalBatch * 1000) / evalMs,
    unit: "eval/s",
    ms: evalMs,
    detail: `batch ${s.evalBatch}, ${((s.evalBatch * fl.forward) / evalMs / 1e6).toFixed(2)} GFLOP/s`,
  });
  tf.dispose(xe);
  net.dispose();
  return rows;
}

export function formatTable(rows: Row[]): string {
  const cells = rows.map((r) => [
    r.name,
    r.backend,
    `${r.value.toFixed(2)} ${r.unit}`,
    `${r.ms.toFixed(1)} ms`,
    r.detail,
  ]);
  const head = ["benchmark", "backend", "throughput", "time/rep", "detail"];
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) =>
    c
      .map((v, i) => v.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  return [line(head), line(widths.map((n) => "-".repeat(n))), ...cells.map(line)].join("\n");
}
