// What the ONNX Runtime tests share: starting the engine with the runtime's availability, and their error measure.
import assert from "node:assert/strict";
import { initEngine } from "../../src/core/engine.ts";
import { onnxAvailable } from "../../src/onnx/runtime.ts";

/** Starts the cpu engine; returns why onnxruntime-node cannot load (the tests' skip reason), or undefined. */
export async function startOnnxTests(): Promise<string | undefined> {
  await initEngine("cpu", { quiet: true });
  const why = await onnxAvailable();
  return why ? `onnxruntime-node cannot load: ${why}` : undefined;
}

/** max |a - b| / max |b|. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, "output sizes differ");
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return d / Math.max(m, 1e-30);
}
