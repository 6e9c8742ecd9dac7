// What the ONNX Runtime tests share: starting the engine with the runtime's availability, and their error measure.
import assert from "node:assert/strict";
import { initEngine } from "../../src/core/engine.ts";
import type { UNetConfig } from "../../src/nets/unet.ts";
import { onnxUnavailable } from "../../src/onnx/runtime.ts";

/** Starts the cpu engine; returns why onnxruntime-node cannot load (the tests' skip reason), or undefined. */
export async function startOnnxTests(): Promise<string | undefined> {
  await initEngine("cpu", { quiet: true });
  const why = await onnxUnavailable();
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

/** The exporter tests' small UNet (16×16, attention at 8×8, two heads, learned sigma), no text; `extra` overrides. */
export function exportUNetConfig(extra: Partial<UNetConfig> = {}): UNetConfig {
  return {
    imageSize: 16,
    inChannels: 3,
    modelChannels: 32,
    outChannels: 6,
    numResBlocks: 1,
    attentionResolutions: [8],
    channelMult: [1, 2],
    numHeads: 2,
    numHeadChannels: -1,
    numHeadsUpsample: -1,
    useScaleShiftNorm: true,
    resblockUpdown: true,
    useNewAttentionOrder: false,
    ...extra,
  };
}

/** Their text encoder: 50 tokens, 6 positions, one layer. */
export const exportTextConfig = () => ({
  vocabSize: 50,
  ctx: 6,
  width: 32,
  layers: 1,
  heads: 2,
  finalLn: true,
  padding: true,
});
