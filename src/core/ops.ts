// Differentiable ops whose gradients run at full speed on the wasm and cpu backends.
//
// tfjs-backend-wasm 4.22 registers no Conv2DBackpropFilter and no UnsortedSegmentSum (so the stock gradients of
// tf.conv2d and tf.gather throw there), and its Conv2DBackpropInput is about 10x slower than a forward
// convolution. Every gradient below is therefore expressed with kernels that wasm runs through XNNPACK: forward
// convolutions, matMul, pad/slice/concat/reshape and scatterND. The kernels' registered gradients (Conv2D's among
// them, built from the functions here) are ./gradients.ts, which the engine's initialisation registers.
import type { Tensor, Tensor2D, Tensor4D } from "./engine.ts";
import { tf } from "./engine.ts";

export type ConvPad = "same" | "valid" | number;

/** Explicit padding [top, bottom, left, right] with TensorFlow's "same" convention (extra pixel at the bottom/right). */
export interface Pads {
  top: number;
  bottom: number;
  left: number;
  right: number;
}

export function resolvePads(h: number, w: number, k: number, stride: number, pad: ConvPad): Pads {
  if (pad === "valid") return { top: 0, bottom: 0, left: 0, right: 0 };
  if (typeof pad === "number") {
    if (!Number.isInteger(pad) || pad < 0)
      throw new Error(`conv2d: padding must be a non-negative integer, got ${pad}`);
    return { top: pad, bottom: pad, left: pad, right: pad };
  }
  const along = (n: number): [number, number] => {
    const out = Math.ceil(n / stride);
    const total = Math.max(0, (out - 1) * stride + k - n);
    const lo = Math.floor(total / 2);
    return [lo, total - lo];
  };
  const [top, bottom] = along(h);
  const [left, right] = along(w);
  return { top, bottom, left, right };
}

export function convOutSize(n: number, k: number, stride: number, lo: number, hi: number): number {
  return Math.floor((n + lo + hi - k) / stride) + 1;
}

/**
 * Which implementation conv2d's gradients use. "custom": forward-conv formulations below for both dx and dw;
 * "native": tf's Conv2DBackpropInput/Filter (wasm has no Filter kernel, so only for comparison on cpu).
 * "auto": what measured fastest per backend: wasm custom dx (10x tf's) and custom dw (tf has none); cpu tf's
 * dx (its JS loop beats reverse+pad+conv there) and custom dw (70x tf's); other backends (tfjs-node, webgl) native.
 * "replay": custom dx, native dw, for src/onnx/trace.ts, which records the Conv2DBackpropFilter kernel as one node
 * (computing it with convFilterGrad where the backend has none) so that its ONNX replay can choose the formulation.
 */
export type ConvGradMode = "auto" | "custom" | "native" | "replay";
let convGradMode: ConvGradMode = "auto";
/**
 * Set when the gradient registry (./gradients.ts) registered Conv2D's gradient, i.e. tf.conv2d is differentiable
 * with the functions below.
 */
let ownsConv2DGrad = false;
export function setOwnsConv2DGrad(): void {
  ownsConv2DGrad = true;
}
export function setConvGradMode(mode: ConvGradMode): void {
  convGradMode = mode;
}
export function getConvGradMode(): ConvGradMode {
  return convGradMode;
}
/** Whether conv2d's gradient wrt input ("x") or filter ("w") uses the custom formulation on the active backend. */
export function useCustomConvGrad(which: "x" | "w"): boolean {
  if (convGradMode === "replay") return which === "x";
  if (convGradMode !== "auto") return convGradMode === "custom";
  const b = tf.getBackend();
  return b === "wasm" || (b === "cpu" && which === "w");
}

/** Pads (positive) or crops (negative) the two spatial axes of an NHWC tensor. */
export function padOrCrop(x: Tensor4D, top: number, bottom: number, left: number, right: number): Tensor4D {
  const [b, h, w, c] = x.shape;
  if (top < 0 || bottom < 0 || left < 0 || right < 0) {
    const t0 = Math.max(0, -top);
    const l0 = Math.max(0, -left);
    x = tf.slice(x, [0, t0, l0, 0], [b, h - t0 - Math.max(0, -bottom), w - l0 - Math.max(0, -right), c]);
  }
  const pt = Math.max(0, top);
  const pb = Math.max(0, bottom);
  const pl = Math.max(0, left);
  const pr = Math.max(0, right);
  if (pt === 0 && pb === 0 && pl === 0 && pr === 0) return x;
  return tf.pad(x, [
    [0, 0],
    [pt, pb],
    [pl, pr],
    [0, 0],
  ]);
}

/** Inserts stride-1 zeros between the spatial samples of dy (and after the last one). */
export function dilateSpatial(dy: Tensor4D, s: number): Tensor4D {
  if (s === 1) return dy;
  const [b, h, w, c] = dy.shape;
  const z = tf.pad(tf.reshape(dy, [b * h, 1, w, 1, c]), [
    [0, 0],
    [0, s - 1],
    [0, 0],
    [0, s - 1],
    [0, 0],
  ]);
  return tf.reshape(z, [b, h * s, w * s, c]);
}

/** dL/dx of a convolution, as a stride-1 forward convolution of (zero-dilated) dy with the flipped, transposed filter. */
export function convInputGrad(
  dy: Tensor4D,
  w: Tensor4D,
  xShape: number[],
  stride: number,
  p: Pads,
): Tensor4D {
  const [kh, kw] = w.shape;
  const h = xShape[1]!;
  const wd = xShape[2]!;
  return tf.tidy(() => {
    const wt = tf.transpose(tf.reverse(w, [0, 1]), [0, 1, 3, 2]) as Tensor4D;
    const d = dilateSpatial(dy, stride);
    // d has Ho*s rows; dx[j] = sum_m dPadded[j + m] * wFlip[m] with dPadded[u] = d[u - (kh - 1 - top)].
    const top = kh - 1 - p.top;
    const left = kw - 1 - p.left;
    // A valid conv then yields top + rows + bottom - kh + 1 = h rows; negative pads crop rows that only ever met padding.
    const bottom = h + kh - 1 - top - d.shape[1];
    const right = wd + kw - 1 - left - d.shape[2];
    const dp = padOrCrop(d, top, bottom, left, right);
    return tf.conv2d(dp, wt, 1, "valid");
  });
}

/**
 * dL/dw of a convolution as ONE forward convolution with batch and channels swapped: the padded input viewed as
 * [Ci, Hp, Wp, B] is correlated with dy viewed as a [Ho, Wo, B, Co] filter (dilated by the stride), giving
 * [Ci, kh, kw, Co]. Measured on 8x32x32x64 -> 64, 3x3: 49 ms on wasm vs 443 ms for im2col + matMul (wasm's
 * transposed matMul and strided slices are slow); on cpu 320 ms vs 23 s for tf's Conv2DBackpropFilter.
 */
export function convFilterGrad(
  x: Tensor4D,
  dy: Tensor4D,
  wShape: number[],
  stride: number,
  p: Pads,
): Tensor4D {
  const kh = wShape[0]!;
  const kw = wShape[1]!;
  const ci = x.shape[3];
  const co = dy.shape[3];
  return tf.tidy(() => {
    const xt = tf.transpose(padOrCrop(x, p.top, p.bottom, p.left, p.right), [3, 1, 2, 0]) as Tensor4D;
    const f = tf.transpose(dy, [1, 2, 0, 3]) as Tensor4D;
    let g = tf.conv2d(xt, f, 1, "valid", "NHWC", stride);
    // Rows/columns of the input that no output window reached would add extra positions here: drop them.
    if (g.shape[1] !== kh || g.shape[2] !== kw) g = tf.slice(g, [0, 0, 0, 0], [ci, kh, kw, co]);
    return tf.transpose(g, [1, 2, 0, 3]) as Tensor4D;
  });
}

/** Typed front for tf.customGrad: `fwd` receives the inputs and a save function; gradFunc returns one grad per input. */
function withGrad<T extends Tensor>(
  inputs: Tensor[],
  fwd: (
    xs: Tensor[],
    save: (t: Tensor[]) => void,
  ) => { value: T; gradFunc: (dy: T, saved: Tensor[]) => Tensor[] },
): T {
  const f = tf.customGrad<T>((...args) => {
    const save = args[args.length - 1] as (t: Tensor[]) => void;
    return fwd(args.slice(0, -1) as Tensor[], save);
  });
  return f(...inputs);
}

/** tf's own Conv2DBackpropInput/Filter kernels (absent or slow on wasm): the reference the custom gradients are benchmarked against. */
export function nativeConvGrad(
  which: "x" | "w",
  dy: Tensor4D,
  x: Tensor4D,
  w: Tensor4D,
  stride: number,
  p: Pads,
): Tensor4D {
  const pad = [
    [0, 0],
    [p.top, p.bottom],
    [p.left, p.right],
    [0, 0],
  ];
  const attrs = {
    strides: [stride, stride],
    pad,
    dataFormat: "NHWC",
    dimRoundingMode: undefined,
    dilations: [1, 1],
  };
  const eng = tf.engine();
  if (which === "x") {
    return eng.runKernel("Conv2DBackpropInput", { dy, filter: w }, {
      ...attrs,
      inputShape: x.shape,
    } as never) as Tensor4D;
  }
  return eng.runKernel("Conv2DBackpropFilter", { x, dy }, {
    ...attrs,
    filterShape: w.shape,
  } as never) as Tensor4D;
}

/** 2-D convolution, NHWC input, [kh, kw, in, out] filter, with gradients that avoid wasm's missing/slow kernels. */
export function conv2d(x: Tensor4D, w: Tensor4D, stride = 1, pad: ConvPad = "same"): Tensor4D {
  return ownsConv2DGrad ? conv2dRegistered(x, w, stride, pad) : conv2dCustomGrad(x, w, stride, pad);
}

function convSetup(x: Tensor4D, w: Tensor4D, stride: number, pad: ConvPad) {
  if (x.rank !== 4 || w.rank !== 4)
    throw new Error(`conv2d: expected rank-4 x and w, got ${x.rank} and ${w.rank}`);
  if (x.shape[3] !== w.shape[2]) {
    throw new Error(`conv2d: input has ${x.shape[3]} channels but filter [${w.shape}] expects ${w.shape[2]}`);
  }
  const p = resolvePads(x.shape[1], x.shape[2], w.shape[0], stride, pad);
  const explicit: [[number, number], [number, number], [number, number], [number, number]] = [
    [0, 0],
    [p.top, p.bottom],
    [p.left, p.right],
    [0, 0],
  ];
  return { p, explicit };
}

/**
 * conv2d through the registered Conv2D gradient: the same math as conv2dCustomGrad, but evaluated lazily per input,
 * so the input gradient of a first layer is never computed (customGrad always computes both).
 */
export function conv2dRegistered(x: Tensor4D, w: Tensor4D, stride = 1, pad: ConvPad = "same"): Tensor4D {
  return tf.conv2d(x, w, stride, convSetup(x, w, stride, pad).explicit);
}

/** conv2d with its gradient attached by tf.customGrad; used when another package owns Conv2D's registered gradient. */
export function conv2dCustomGrad(x: Tensor4D, w: Tensor4D, stride = 1, pad: ConvPad = "same"): Tensor4D {
  const { p, explicit } = convSetup(x, w, stride, pad);
  return withGrad<Tensor4D>([x, w], ([xi, wi], save) => {
    save([xi!, wi!]);
    return {
      value: tf.conv2d(xi as Tensor4D, wi as Tensor4D, stride, explicit),
      gradFunc: (dy, saved) => {
        const [xs, ws] = saved as [Tensor4D, Tensor4D];
        return [
          useCustomConvGrad("x")
            ? convInputGrad(dy, ws, xs.shape, stride, p)
            : nativeConvGrad("x", dy, xs, ws, stride, p),
          useCustomConvGrad("w")
            ? convFilterGrad(xs, dy, ws.shape, stride, p)
            : nativeConvGrad("w", dy, xs, ws, stride, p),
        ];
      },
    };
  });
}

/**
 * Row lookup table[ids] with shape [...ids.shape, d]. The gradient scatters dy back with scatterND, which sums
 * repeated ids on both backends (the stock tf.gather gradient needs UnsortedSegmentSum, absent on wasm).
 */
export function embedding(table: Tensor2D, ids: Tensor): Tensor {
  const [n, d] = table.shape;
  const outShape = [...ids.shape, d];
  return tf.tidy(() => {
    const flat = tf.reshape(ids.dtype === "int32" ? ids : tf.cast(ids, "int32"), [-1]);
    const m = flat.shape[0]!;
    return withGrad<Tensor>([table, flat], ([t, ix], save) => {
      save([ix!]);
      return {
        value: tf.reshape(tf.gather(t!, ix!), outShape),
        gradFunc: (dy, saved) => [
          tf.scatterND(tf.reshape(saved[0]!, [m, 1]), tf.reshape(dy, [m, d]), [n, d]),
          tf.zerosLike(saved[0]!),
        ],
      };
    });
  });
}

const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/**
 * Exact GELU x·Φ(x) = 0.5·x·(1 + erf(x/√2)). tf.erf has a wasm kernel and a gradient, but a custom gradient
 * (Φ(x) + x·φ(x)) saves only x instead of every intermediate of the composite.
 */
export function gelu<T extends Tensor>(x: T): T {
  return withGrad<T>([x], ([xi], save) => {
    save([xi!]);
    return {
      value: tf.mul(tf.mul(xi!, 0.5), tf.add(1, tf.erf(tf.mul(xi!, SQRT1_2)))) as T,
      gradFunc: (dy, saved) => {
        const xs = saved[0]!;
        const cdf = tf.mul(0.5, tf.add(1, tf.erf(tf.mul(xs, SQRT1_2))));
        const pdf = tf.mul(INV_SQRT_2PI, tf.exp(tf.mul(tf.square(xs), -0.5)));
        return [tf.mul(dy, tf.add(cdf, tf.mul(xs, pdf)))];
      },
    };
  });
}

/** x·sigmoid(x); the composite's stock gradients all exist on wasm. */
export function silu<T extends Tensor>(x: T): T {
  return tf.mul(x, tf.sigmoid(x)) as T;
}

/**
 * Nearest-neighbour 2x upsampling. tf.image.resizeNearestNeighbor at exactly 2x (no corner alignment, no half-pixel
 * centres) picks source floor(i/2), i.e. exact duplication, and both backends have its gradient kernel. Measured on
 * wasm, [8,16,16,64]: 3 ms forward + 8 ms gradient, vs 72 + 84 ms for reshape/broadcastTo and 15 + 12 ms for concats.
 */
export function upsampleNearest2x(x: Tensor4D): Tensor4D {
  return tf.image.resizeNearestNeighbor(x, [2 * x.shape[1], 2 * x.shape[2]]);
}

/** 2x2 average pooling, stride 2 (floor on odd sizes, like torch's avg_pool2d), via reshape + mean. */
export function avgPool2x(x: Tensor4D): Tensor4D {
  const [b, h, w, c] = x.shape;
  const h2 = Math.floor(h / 2);
  const w2 = Math.floor(w / 2);
  return tf.tidy(() => {
    const xc = h % 2 || w % 2 ? tf.slice(x, [0, 0, 0, 0], [b, 2 * h2, 2 * w2, c]) : x;
    return tf.reshape(tf.mean(tf.reshape(xc, [b * h2, 2, w2, 2, c]), [1, 3]), [b, h2, w2, c]);
  });
}

/**
 * Runs `fn`, which may call tf.grad, from inside a gradient function (a customGrad's gradFunc). tfjs's engine keeps
 * one active tape: a gradient taken while another's backward pass runs replaces that tape and, when done, sets it
 * to null, so the outer pass then fails (`activeTape` is null) and leaks the tensors its nodes saved. The outer tape
 * is put back afterwards.
 */
export function withNestedTape<T>(fn: () => T): T {
  const state = (tf.engine() as unknown as { state: { activeTape: unknown } }).state;
  const outer = state.activeTape;
  try {
    return fn();
  } finally {
    state.activeTape = outer;
  }
}
