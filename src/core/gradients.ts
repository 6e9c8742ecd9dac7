// The gradient registry. tfjs-core's CommonJS entry (the one Node loads) registers no gradients at all: the umbrella
// @tensorflow/tfjs package does that via `@tensorflow/tfjs-core/dist/register_all_gradients`, an ES-module build
// with extensionless imports that Node cannot load. So the gradients of every kernel the project's models and losses
// use are registered here, in terms of ops that exist on wasm. A kernel that already has a gradient (tfjs-node or
// the umbrella package loaded) is left alone.

import type { NamedAttrMap } from "@tensorflow/tfjs-core";
import type { Tensor, Tensor4D } from "./engine.ts";
import { tf } from "./engine.ts";
import {
  convFilterGrad,
  convInputGrad,
  dilateSpatial,
  nativeConvGrad,
  padOrCrop,
  setOwnsConv2DGrad,
  useCustomConvGrad,
} from "./ops.ts";

type GradFn = (
  dy: Tensor,
  saved: Tensor[],
  attrs: NamedAttrMap,
) => Record<string, () => Tensor> | (() => Tensor)[];
interface GradSpec {
  inputsToSave?: string[];
  outputsToSave?: boolean[];
  saveAllInputs?: boolean;
  gradFunc: GradFn;
}

/** Sums a broadcast gradient back down to `shape`. */
function unbroadcast(g: Tensor, shape: readonly number[]): Tensor {
  const axes = tf.backend_util.getReductionAxes(shape as number[], g.shape);
  const r = axes.length > 0 ? tf.sum(g, axes) : g;
  return tf.reshape(r, shape as number[]);
}

function keepDimsShape(shape: readonly number[], axes: number[]): number[] {
  const out = shape.slice();
  for (const a of axes) out[a] = 1;
  return out;
}

function axesOf(attr: unknown, shape: readonly number[]): number[] {
  return tf.util.parseAxisParam(attr as number | number[], shape as number[]);
}

const unary = (f: (x: Tensor, dy: Tensor) => Tensor): GradSpec => ({
  inputsToSave: ["x"],
  gradFunc: (dy, [x]) => ({ x: () => f(x!, dy) }),
});
const unaryOut = (f: (y: Tensor, dy: Tensor) => Tensor): GradSpec => ({
  outputsToSave: [true],
  gradFunc: (dy, [y]) => ({ x: () => f(y!, dy) }),
});
const zeroGrad: GradSpec = { gradFunc: (dy) => ({ x: () => tf.zerosLike(dy) }) };
// Comparisons are piecewise constant; the tape still needs a gradient when their inputs require one.
const zeroBinary: GradSpec = {
  inputsToSave: ["a", "b"],
  gradFunc: (_dy, [a, b]) => ({ a: () => tf.zerosLike(a!), b: () => tf.zerosLike(b!) }),
};

// Logical ops on comparisons of values that require a gradient: zero, and float32 as the tape demands of every
// gradient even for bool inputs.
const zeroLogical: GradSpec = {
  inputsToSave: ["a", "b"],
  gradFunc: (_dy, [a, b]) => ({ a: () => tf.zeros(a!.shape), b: () => tf.zeros(b!.shape) }),
};

function minMaxGrad(dy: Tensor, saved: Tensor[], attrs: NamedAttrMap) {
  const [x, y] = saved as [Tensor, Tensor];
  const axes = axesOf(attrs.reductionIndices ?? attrs.axis, x.shape);
  const shape = keepDimsShape(x.shape, axes);
  return { x: () => tf.mul(tf.reshape(dy, shape), tf.cast(tf.equal(x, tf.reshape(y, shape)), dy.dtype)) };
}

const GRADIENTS: Record<string, GradSpec> = {
  Add: {
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => ({ a: () => unbroadcast(dy, a!.shape), b: () => unbroadcast(dy, b!.shape) }),
  },
  AddN: { saveAllInputs: true, gradFunc: (dy, saved) => saved.map(() => () => tf.clone(dy)) },
  Sub: {
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => ({
      a: () => unbroadcast(dy, a!.shape),
      b: () => unbroadcast(tf.neg(dy), b!.shape),
    }),
  },
  Multiply: {
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => ({
      a: () => unbroadcast(tf.mul(dy, tf.cast(b!, "float32")), a!.shape),
      b: () => unbroadcast(tf.mul(dy, tf.cast(a!, "float32")), b!.shape),
    }),
  },
  RealDiv: {
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => ({
      a: () => unbroadcast(tf.div(dy, tf.cast(b!, "float32")), a!.shape),
      b: () =>
        unbroadcast(
          tf.neg(tf.div(tf.mul(dy, tf.cast(a!, "float32")), tf.square(tf.cast(b!, "float32")))),
          b!.shape,
        ),
    }),
  },
  SquaredDifference: {
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => {
      const two = tf.mul(tf.sub(a!, b!), 2);
      return {
        a: () => unbroadcast(tf.mul(dy, two), a!.shape),
        b: () => unbroadcast(tf.mul(dy, tf.neg(two)), b!.shape),
      };
    },
  },
  Maximum: {
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => ({
      a: () => unbroadcast(tf.mul(dy, tf.cast(tf.greaterEqual(a!, b!), "float32")), a!.shape),
      b: () => unbroadcast(tf.mul(dy, tf.cast(tf.less(a!, b!), "float32")), b!.shape),
    }),
  },
  Minimum: {
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => ({
      a: () => unbroadcast(tf.mul(dy, tf.cast(tf.lessEqual(a!, b!), "float32")), a!.shape),
      b: () => unbroadcast(tf.mul(dy, tf.cast(tf.greater(a!, b!), "float32")), b!.shape),
    }),
  },
  Pow: {
    inputsToSave: ["a", "b"],
    outputsToSave: [true],
    gradFunc: (dy, [a, b, y]) => ({
      a: () => {
        const e = tf.cast(b!, "float32");
        return unbroadcast(tf.mul(dy, tf.mul(e, tf.pow(a!, tf.sub(e, 1)))), a!.shape);
      },
      b: () => {
        const logA = tf.where(tf.greater(a!, 0), tf.log(a!), tf.zerosLike(a!));
        return unbroadcast(tf.mul(dy, tf.mul(y!, logA)), b!.shape);
      },
    }),
  },
  Neg: { gradFunc: (dy) => ({ x: () => tf.neg(dy) }) },
  Square: unary((x, dy) => tf.mul(dy, tf.mul(tf.cast(x, "float32"), 2))),
  Sqrt: unary((x, dy) => tf.div(dy, tf.mul(tf.sqrt(tf.cast(x, "float32")), 2))),
  Rsqrt: unary((x, dy) => tf.div(dy, tf.mul(tf.pow(x, 1.5), -2))),
  Reciprocal: unary((x, dy) => tf.div(dy, tf.neg(tf.square(x)))),
  Exp: unaryOut((y, dy) => tf.mul(dy, y)),
  Expm1: unary((x, dy) => tf.mul(dy, tf.exp(x))),
  Log: unary((x, dy) => tf.div(dy, tf.cast(x, "float32"))),
  Log1p: unary((x, dy) => tf.div(dy, tf.add(x, 1))),
  Abs: unary((x, dy) => tf.mul(dy, tf.sign(tf.cast(x, "float32")))),
  Tanh: unaryOut((y, dy) => tf.mul(tf.sub(1, tf.square(y)), dy)),
  Sigmoid: unaryOut((y, dy) => tf.mul(dy, tf.mul(y, tf.sub(1, y)))),
  Softplus: unary((x, dy) => tf.mul(dy, tf.sigmoid(x))),
  Relu: unary((x, dy) => tf.mul(dy, tf.cast(tf.step(x), "float32"))),
  Relu6: unary((x, dy) => tf.mul(dy, tf.cast(tf.mul(tf.lessEqual(x, 6), tf.step(x)), "float32"))),
  LeakyRelu: {
    inputsToSave: ["x"],
    gradFunc: (dy, [x], attrs) => ({
      x: () => tf.where(tf.greater(x!, 0), dy, tf.mul(dy, attrs.alpha as number)),
    }),
  },
  Elu: unaryOut((y, dy) => tf.engine().runKernel("EluGrad", { dy, y }) as Tensor),
  Erf: unary((x, dy) => tf.mul(dy, tf.mul(2 / Math.sqrt(Math.PI), tf.exp(tf.neg(tf.square(x)))))),
  Sin: unary((x, dy) => tf.mul(tf.cos(tf.cast(x, "float32")), dy)),
  Cos: unary((x, dy) => tf.mul(tf.neg(tf.sin(tf.cast(x, "float32"))), dy)),
  ClipByValue: {
    inputsToSave: ["x"],
    gradFunc: (dy, [x], attrs) => ({
      x: () =>
        tf.where(
          tf.logicalAnd(
            tf.greaterEqual(x!, attrs.clipValueMin as number),
            tf.lessEqual(x!, attrs.clipValueMax as number),
          ),
          dy,
          tf.zerosLike(dy),
        ),
    }),
  },
  Select: {
    inputsToSave: ["condition"],
    gradFunc: (dy, [c]) => ({
      condition: () => tf.zerosLike(tf.cast(c!, "float32")),
      t: () => tf.mul(dy, tf.cast(c!, dy.dtype)),
      e: () => tf.mul(dy, tf.cast(tf.logicalNot(c!), dy.dtype)),
    }),
  },
  Floor: zeroGrad,
  Ceil: zeroGrad,
  Round: zeroGrad,
  Sign: zeroGrad,
  Step: zeroGrad,
  Identity: { gradFunc: (dy) => ({ x: () => tf.cast(dy, "float32") }) },
  Cast: { inputsToSave: ["x"], gradFunc: (dy) => ({ x: () => tf.clone(dy) }) },
  Reshape: { inputsToSave: ["x"], gradFunc: (dy, [x]) => ({ x: () => tf.reshape(dy, x!.shape) }) },
  ExpandDims: { inputsToSave: ["input"], gradFunc: (dy, [x]) => ({ input: () => tf.reshape(dy, x!.shape) }) },
  Transpose: {
    gradFunc: (dy, _s, attrs) => ({
      x: () => tf.transpose(dy, tf.backend_util.getUndoAxesPermutation(attrs.perm as number[])),
    }),
  },
  Reverse: { gradFunc: (dy, _s, attrs) => ({ x: () => tf.reverse(dy, axesOf(attrs.dims, dy.shape)) }) },
  Slice: {
    inputsToSave: ["x"],
    gradFunc: (dy, [x], attrs) => {
      const [begin, size] = tf.slice_util.parseSliceParams(
        x!,
        attrs.begin as number[],
        attrs.size as number[],
      );
      const pads = x!.shape.map((n, i) => [begin![i]!, n - begin![i]! - size![i]!] as [number, number]);
      return { x: () => tf.pad(dy, pads) };
    },
  },
  PadV2: {
    inputsToSave: ["x"],
    gradFunc: (dy, [x], attrs) => ({
      x: () =>
        tf.slice(
          dy,
          (attrs.paddings as [number, number][]).map((p) => p[0]),
          x!.shape,
        ),
    }),
  },
  Concat: {
    saveAllInputs: true,
    gradFunc: (dy, saved, attrs) => {
      const axis = axesOf(attrs.axis, saved[0]!.shape)[0]!;
      return tf
        .split(
          dy,
          saved.map((t) => t.shape[axis]!),
          axis,
        )
        .map((t) => () => t);
    },
  },
  Pack: {
    saveAllInputs: true,
    gradFunc: (dy, _s, attrs) => tf.unstack(dy, attrs.axis as number).map((t) => () => t),
  },
  Unpack: {
    gradFunc: (dy, _s, attrs) => ({ value: () => tf.stack(dy as unknown as Tensor[], attrs.axis as number) }),
  },
  SplitV: {
    gradFunc: (dy, _s, attrs) => ({ x: () => tf.concat(dy as unknown as Tensor[], attrs.axis as number) }),
  },
  Tile: {
    inputsToSave: ["x"],
    gradFunc: (dy, [x], attrs) => {
      // Interleave (rep, size) axes so the tiled copies become their own axes, then sum them away: any rank.
      const reps = attrs.reps as number[];
      const split = x!.shape.flatMap((n, i) => [reps[i]!, n]);
      const axes = reps.map((_, i) => 2 * i);
      return { x: () => tf.reshape(tf.sum(tf.reshape(dy, split), axes), x!.shape) };
    },
  },
  BroadcastTo: {
    gradFunc: (dy, _s, attrs) => {
      const inShape = attrs.inputShape as number[];
      const axes = (attrs.shape as number[]).flatMap((n, i) => (inShape[i] !== n ? [i] : []));
      return { x: () => (axes.length > 0 ? tf.sum(dy, axes, true) : tf.clone(dy)) };
    },
  },
  GatherV2: {
    inputsToSave: ["x", "indices"],
    gradFunc: (dy, [x, idx], attrs) => ({
      x: () => {
        if ((attrs.batchDims as number | undefined) ?? 0)
          throw new Error("gather gradient: batchDims is not supported");
        const axis = axesOf(attrs.axis, x!.shape)[0]!;
        // Move the gathered axis first, scatter-add rows (duplicates sum), move it back.
        const outer = x!.shape.slice(0, axis);
        const inner = x!.shape.slice(axis + 1);
        const m = idx!.size;
        const vals = tf.reshape(dy, [...outer, m, ...inner]);
        const perm = [outer.length, ...outer.map((_, i) => i), ...inner.map((_, i) => outer.length + 1 + i)];
        const moved = tf.transpose(vals, perm);
        const rows = tf.scatterND(tf.reshape(tf.cast(idx!, "int32"), [m, 1]), moved, [
          x!.shape[axis]!,
          ...outer,
          ...inner,
        ]);
        return tf.transpose(rows, tf.backend_util.getUndoAxesPermutation(perm));
      },
      indices: () => tf.zerosLike(idx!),
    }),
  },
  Sum: {
    inputsToSave: ["x"],
    gradFunc: (dy, [x], attrs) => ({
      x: () =>
        tf.mul(tf.reshape(dy, keepDimsShape(x!.shape, axesOf(attrs.axis, x!.shape))), tf.ones(x!.shape)),
    }),
  },
  Mean: {
    inputsToSave: ["x"],
    gradFunc: (dy, [x], attrs) => {
      const axes = axesOf(attrs.axis, x!.shape);
      const n = axes.reduce((a, i) => a * x!.shape[i]!, 1);
      return { x: () => tf.mul(tf.reshape(dy, keepDimsShape(x!.shape, axes)), tf.fill(x!.shape, 1 / n)) };
    },
  },
  Max: { inputsToSave: ["x"], outputsToSave: [true], gradFunc: minMaxGrad },
  Min: { inputsToSave: ["x"], outputsToSave: [true], gradFunc: minMaxGrad },
  Softmax: {
    outputsToSave: [true],
    gradFunc: (dy, [y], attrs) => {
      const dyy = tf.mul(dy, y!);
      return { logits: () => tf.sub(dyy, tf.mul(tf.sum(dyy, [attrs.dim as number], true), y!)) };
    },
  },
  LogSoftmax: {
    outputsToSave: [true],
    gradFunc: (dy, [y], attrs) => ({
      logits: () => tf.sub(dy, tf.mul(tf.sum(dy, attrs.axis as number, true), tf.exp(y!))),
    }),
  },
  BatchMatMul: {
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b], attrs) => {
      const ta = attrs.transposeA as boolean;
      const tb = attrs.transposeB as boolean;
      // Batch dims may broadcast; sum the gradient back over them.
      const fix = (g: Tensor, like: Tensor) => unbroadcast(g, like.shape);
      if (!ta && !tb)
        return {
          a: () => fix(tf.matMul(dy, b!, false, true), a!),
          b: () => fix(tf.matMul(a!, dy, true, false), b!),
        };
      if (!ta && tb)
        return { a: () => fix(tf.matMul(dy, b!), a!), b: () => fix(tf.matMul(dy, a!, true, false), b!) };
      if (ta && !tb)
        return { a: () => fix(tf.matMul(b!, dy, false, true), a!), b: () => fix(tf.matMul(a!, dy), b!) };
      return {
        a: () => fix(tf.matMul(b!, dy, true, true), a!),
        b: () => fix(tf.matMul(dy, a!, true, true), b!),
      };
    },
  },
  Conv2D: {
    inputsToSave: ["x", "filter"],
    gradFunc: (dy, [x, w], attrs) => {
      const x4 = x as Tensor4D;
      const w4 = w as Tensor4D;
      const strides = attrs.strides as number | [number, number];
      const s = typeof strides === "number" ? strides : strides[0];
      const dil = attrs.dilations as number | [number, number] | undefined;
      const dilated =
        dil !== undefined && (typeof dil === "number" ? dil !== 1 : dil[0] !== 1 || dil[1] !== 1);
      if (
        (typeof strides !== "number" && strides[0] !== strides[1]) ||
        dilated ||
        attrs.dataFormat === "NCHW"
      ) {
        throw new Error("conv2d gradient: only NHWC, equal strides and no dilation are supported");
      }
      const info = tf.backend_util.computeConv2DInfo(
        x4.shape,
        w4.shape,
        strides,
        1,
        attrs.pad as "same",
        attrs.dimRoundingMode as "floor" | undefined,
      );
      const p = {
        top: info.padInfo.top,
        bottom: info.padInfo.bottom,
        left: info.padInfo.left,
        right: info.padInfo.right,
      };
      const g = dy as Tensor4D;
      return {
        x: () =>
          useCustomConvGrad("x")
            ? convInputGrad(g, w4, x4.shape, s!, p)
            : nativeConvGrad("x", g, x4, w4, s!, p),
        filter: () =>
          useCustomConvGrad("w")
            ? convFilterGrad(x4, g, w4.shape, s!, p)
            : nativeConvGrad("w", g, x4, w4, s!, p),
      };
    },
  },
  AvgPool: {
    inputsToSave: ["x"],
    gradFunc: (dy, [x], attrs) => ({
      x: () => tf.engine().runKernel("AvgPoolGrad", { dy, input: x! }, attrs) as Tensor,
    }),
  },
  MaxPool: {
    inputsToSave: ["x"],
    outputsToSave: [true],
    gradFunc: (dy, [x, y], attrs) => ({
      // wasm's MaxPoolGrad mis-addresses non-square inputs with several channels (measured: 4x6x2 fails).
      x: () =>
        tf.getBackend() === "wasm"
          ? maxPoolGradBySlices(dy as Tensor4D, x as Tensor4D, y as Tensor4D, attrs)
          : (tf.engine().runKernel("MaxPoolGrad", { dy, input: x!, output: y! }, attrs) as Tensor),
    }),
  },
  ResizeNearestNeighbor: {
    inputsToSave: ["images"],
    gradFunc: (dy, [images], attrs) => ({
      images: () => {
        const [b, h, w, c] = images!.shape as [number, number, number, number];
        const fh = dy.shape[1]! / h;
        const fw = dy.shape[2]! / w;
        // cpu's ResizeNearestNeighborGrad is wrong for non-square upsampling (measured: 3x2 -> 6x4). Integer
        // upsampling without corner alignment is plain duplication (floor((i + 0.5) / f) = floor(i / f) with or
        // without half-pixel centres), whose gradient is a sum over each f x f block.
        if (
          tf.getBackend() !== "wasm" &&
          Number.isInteger(fh) &&
          Number.isInteger(fw) &&
          !attrs.alignCorners
        ) {
          return tf.sum(tf.reshape(dy, [b, h, fh, w, fw, c]), [2, 4]);
        }
        return tf.engine().runKernel("ResizeNearestNeighborGrad", { dy, images: images! }, attrs) as Tensor;
      },
    }),
  },
  ResizeBilinear: {
    inputsToSave: ["images"],
    gradFunc: (dy, [images], attrs) => ({
      // The cpu kernel writes NHWC data but labels it [B, W, H, C]; the reshape restores the label.
      images: () =>
        tf.reshape(
          tf.engine().runKernel("ResizeBilinearGrad", { dy, images: images! }, attrs) as Tensor,
          images!.shape,
        ),
    }),
  },
  Cumsum: {
    gradFunc: (dy, _s, attrs) => ({
      x: () => tf.cumsum(dy, attrs.axis as number, attrs.exclusive as boolean, !(attrs.reverse as boolean)),
    }),
  },
  ZerosLike: zeroGrad,
  Greater: zeroBinary,
  GreaterEqual: zeroBinary,
  Less: zeroBinary,
  LessEqual: zeroBinary,
  Equal: zeroBinary,
  NotEqual: zeroBinary,
  LogicalAnd: zeroLogical,
  LogicalOr: zeroLogical,
  LogicalNot: { inputsToSave: ["x"], gradFunc: (_dy, [x]) => ({ x: () => tf.zeros(x!.shape) }) },
  IsNan: zeroGrad,
  IsInf: zeroGrad,
  IsFinite: zeroGrad,
  ArgMax: zeroGrad,
  ArgMin: zeroGrad,
  OnesLike: zeroGrad,
};

/** MaxPool's gradient from strided slices: each window offset routes dy to the first input equal to the max. */
function maxPoolGradBySlices(dy: Tensor4D, x: Tensor4D, y: Tensor4D, attrs: NamedAttrMap): Tensor4D {
  const info = tf.backend_util.computePool2DInfo(
    x.shape,
    attrs.filterSize as [number, number],
    attrs.strides as [number, number],
    1,
    attrs.pad as "same",
    attrs.dimRoundingMode as "floor" | undefined,
  );
  const { top, bottom, left, right } = info.padInfo;
  const [b, h, w, c] = x.shape;
  const [ho, wo] = [info.outHeight, info.outWidth];
  const [sh, sw] = [info.strideHeight, info.strideWidth];
  if (sh !== sw) throw new Error("maxPool gradient on wasm: unequal strides are not supported");
  return tf.tidy(() => {
    const xp = tf.pad(
      x,
      [
        [0, 0],
        [top, bottom],
        [left, right],
        [0, 0],
      ],
      Number.NEGATIVE_INFINITY,
    );
    const [hp, wp] = [xp.shape[1], xp.shape[2]];
    let taken: Tensor = tf.zerosLike(y);
    let acc: Tensor4D = tf.zerosLike(xp);
    for (let i = 0; i < info.filterHeight; i++) {
      for (let j = 0; j < info.filterWidth; j++) {
        const cand = tf.stridedSlice(
          xp,
          [0, i, j, 0],
          [b, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c],
          [1, sh, sw, 1],
        );
        const hit = tf.mul(tf.cast(tf.equal(cand, y), "float32"), tf.sub(1, taken));
        taken = tf.add(taken, hit);
        const g = tf.mul(dy, hit) as Tensor4D;
        // Put row r of g at padded row i + r·sh: dilate by the stride, then shift by (i, j).
        const d = dilateSpatial(g, sh);
        acc = tf.add(acc, padOrCrop(d, i, hp - i - d.shape[1], j, wp - j - d.shape[2]));
      }
    }
    return tf.slice(acc, [0, top, left, 0], [b, h, w, c]);
  });
}

/**
 * Registers the gradient of every kernel above that has none yet. Called by the engine's initialisation
 * (initEngine in ./engine.ts, initBrowserEngine in the explorer's bundle), not on import, so that nothing depends on
 * which module happened to load first; idempotent.
 */
export function registerGradients(): void {
  for (const [kernelName, spec] of Object.entries(GRADIENTS)) {
    if (tf.getGradient(kernelName)) continue;
    if (kernelName === "Conv2D") setOwnsConv2DGrad();
    tf.registerGradient({ kernelName, ...spec } as Parameters<typeof tf.registerGradient>[0]);
  }
}
