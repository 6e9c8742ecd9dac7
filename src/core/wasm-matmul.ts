// A faster BatchMatMul for the wasm backend, installed in place of tfjs-backend-wasm's own kernel.
//
// In tfjs-backend-wasm 4.22 a matMul runs at XNNPACK speed (10-24 GFLOP/s measured here) only when both operands
// are single matrices and neither is transposed; every other call (a batch of matrices, or a transpose flag) ran at
// 0.4-1.6 GFLOP/s on the same sizes, the speed of a plain loop. Transposed products are what every
// matMul gradient is made of (dA = dY·Bᵀ, dB = Aᵀ·dY), and batched ones are what attention is made of, so on wasm
// they dominated the CLIP training steps (80% of a noised-CLIP step). This kernel moves each such call onto the
// fast path: transposes become explicit Transpose kernels (memory-bound, cheap), a batch against one shared matrix
// becomes one tall matrix, and a batch against a batch runs matrix by matrix into the output buffer.

import type { KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from "@tensorflow/tfjs-core";
import * as tf from "@tensorflow/tfjs-core";

interface WasmData {
  id: number;
  memoryOffset: number;
}
interface WasmBackend {
  dataIdMap: { get(dataId: object): WasmData };
  makeOutput(shape: number[], dtype: string): TensorInfo;
  disposeData(dataId: object): void;
  wasm: { HEAPU8: Uint8Array };
}
type Args = { inputs: Record<string, TensorInfo>; backend: WasmBackend; attrs: NamedAttrMap };

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Rows of A below which a batch of products stays in the original kernel's loop (see below). */
const MIN_ROWS_PER_PRODUCT = 8;

/** The stock kernel, kept once this module has replaced it (so that it can be put back). */
let stock: KernelConfig | undefined;
let fast: KernelConfig | undefined;

/** Which wasm BatchMatMul kernel is registered: "fast" (this module's) or "reference" (tfjs-backend-wasm's). */
export function wasmMatMulMode(): "fast" | "reference" {
  return fast !== undefined && tf.getKernel("BatchMatMul", "wasm")?.kernelFunc === fast.kernelFunc
    ? "fast"
    : "reference";
}

/** Registers the fast or the stock wasm BatchMatMul kernel (a no-op when wasm's kernels are not registered). */
export function setWasmMatMul(mode: "fast" | "reference"): void {
  if (mode === wasmMatMulMode()) return;
  if (mode === "fast") installWasmMatMul();
  else if (stock) {
    tf.unregisterKernel("BatchMatMul", "wasm");
    tf.registerKernel(stock);
  }
}

/** Replaces the wasm BatchMatMul kernel by the fast one. */
export function installWasmMatMul(): void {
  if (wasmMatMulMode() === "fast") return;
  if (fast) {
    tf.unregisterKernel("BatchMatMul", "wasm");
    tf.registerKernel(fast);
    return;
  }
  const orig = tf.getKernel("BatchMatMul", "wasm");
  const transposeK = tf.getKernel("Transpose", "wasm");
  const reshapeK = tf.getKernel("Reshape", "wasm");
  if (!orig || !transposeK || !reshapeK) return;
  stock = orig;
  const run = (k: KernelConfig, args: Args) => k.kernelFunc(args as never) as TensorInfo;
  const reshape = (backend: WasmBackend, x: TensorInfo, shape: number[]) =>
    run(reshapeK, { inputs: { x }, backend, attrs: { shape } });
  const matmul = (backend: WasmBackend, a: TensorInfo, b: TensorInfo) =>
    run(orig, { inputs: { a, b }, backend, attrs: { transposeA: false, transposeB: false } });

  const kernelFunc = (args: Args): TensorInfo => {
    const { backend, attrs } = args;
    const inA = args.inputs.a!;
    const inB = args.inputs.b!;
    const ta = attrs.transposeA === true;
    const tb = attrs.transposeB === true;
    const outerA = inA.shape.slice(0, -2);
    const outerB = inB.shape.slice(0, -2);
    const batchA = size(outerA);
    const batchB = size(outerB);
    // Batch dims that broadcast other than "one side is a single matrix": the original kernel's business.
    if (
      inA.dtype !== "float32" ||
      inB.dtype !== "float32" ||
      (batchA > 1 && batchB > 1 && outerA.join() !== outerB.join())
    )
      return run(orig, args);
    const owned: TensorInfo[] = [];
    const own = (t: TensorInfo) => {
      owned.push(t);
      return t;
    };
    try {
      const swapLast = (x: TensorInfo, batch: number) => {
        const r = x.shape.length;
        const m = x.shape[r - 2]!;
        const n = x.shape[r - 1]!;
        const x3 = own(reshape(backend, x, [batch, m, n]));
        return own(run(transposeK, { inputs: { x: x3 }, backend, attrs: { perm: [0, 2, 1] } }));
      };
      const a = ta ? swapLast(inA, batchA) : own(reshape(backend, inA, [batchA, ...inA.shape.slice(-2)]));
      const b = tb ? swapLast(inB, batchB) : own(reshape(backend, inB, [batchB, ...inB.shape.slice(-2)]));
      const [, m, k] = a.shape as [number, number, number];
      const n = b.shape[2]!;
      const outShape = [...tf.broadcast_util.assertAndGetBroadcastShape(outerA, outerB), m, n];
      if (batchB === 1) {
        // Every matrix of A against one B: one [batchA·m, k] × [k, n] product.
        const tall = own(reshape(backend, a, [1, batchA * m, k]));
        const y = own(matmul(backend, tall, b));
        return reshape(backend, y, outShape);
      }
      // Matrix by matrix costs an XNNPACK weight packing per product, which only pays for itself with a few rows
      // to multiply (measured: 16 × [1, 1024]·[1024, 32] took 4.7 ms that way against 0.9 ms in the loop kernel).
      if (m < MIN_ROWS_PER_PRODUCT) {
        const y = own(matmul(backend, a, b));
        return reshape(backend, y, outShape);
      }
      const out = backend.makeOutput(outShape, "float32");
      // Re-read per copy: an allocation that grows wasm memory replaces the HEAPU8 view.
      const copy = (dst: number, src: number, bytes: number) =>
        backend.wasm.HEAPU8.copyWithin(dst, src, src + bytes);
      const aOff = backend.dataIdMap.get(a.dataId).memoryOffset;
      const bOff = backend.dataIdMap.get(b.dataId).memoryOffset;
      const oOff = backend.dataIdMap.get(out.dataId).memoryOffset;
      const aBytes = m * k * 4;
      const bBytes = k * n * 4;
      const oBytes = m * n * 4;
      const ai = own(backend.makeOutput([1, m, k], "float32"));
      const aiOff = backend.dataIdMap.get(ai.dataId).memoryOffset;
      if (batchA === 1) copy(aiOff, aOff, aBytes);
      for (let i = 0; i < batchB; i++) {
        if (batchA > 1) copy(aiOff, aOff + i * aBytes, aBytes);
        // A fresh B matrix per product: XNNPACK caches its packed weights by tensor id, so reusing one buffer
        // with new contents would multiply by stale weights.
        const bi = backend.makeOutput([1, k, n], "float32");
        const biOff = backend.dataIdMap.get(bi.dataId).memoryOffset;
        copy(biOff, bOff + i * bBytes, bBytes);
        const y = matmul(backend, ai, bi);
        const yOff = backend.dataIdMap.get(y.dataId).memoryOffset;
        copy(oOff + i * oBytes, yOff, oBytes);
        backend.disposeData(y.dataId);
        backend.disposeData(bi.dataId);
      }
      return out;
    } finally {
      for (const t of owned) backend.disposeData(t.dataId);
    }
  };
  fast = {
    kernelName: "BatchMatMul",
    backendName: "wasm",
    ...(orig.setupFunc ? { setupFunc: orig.setupFunc } : {}),
    kernelFunc: kernelFunc as unknown as KernelFunc,
  };
  tf.unregisterKernel("BatchMatMul", "wasm");
  tf.registerKernel(fast);
}
