// The golden reference for the tests that check a port against the official outputs: where it is, whether a
// section is present (else the suite's skip reason), its arrays and manifest meta, and the relative error used.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type Tensor, type Tensor4D, tf } from "../../src/core/engine.ts";
import { npyToFloat32, readNpy } from "../../src/core/npy.ts";
import { defaultGoldenDir } from "../../src/core/paths.ts";

export const GOLDEN = defaultGoldenDir();

/** `false` when the golden set has `section`, else the reason to skip (for describe's `skip`). */
export function goldenSkip(section: string): false | string {
  const present = existsSync(join(GOLDEN, "manifest.json")) && existsSync(join(GOLDEN, section));
  return present ? false : `golden reference not found at ${GOLDEN} (set GUIDANCE_LAB_GOLDEN)`;
}

/** A golden array (path relative to the golden set) as float32 data and its shape. */
export function golden(name: string): { data: Float32Array; shape: number[] } {
  const a = readNpy(join(GOLDEN, name));
  return { data: npyToFloat32(a), shape: a.shape };
}

export function goldenTensor(name: string): Tensor {
  const g = golden(name);
  return tf.tensor(g.data, g.shape, "float32");
}

/** max |ours - ref| / max |ref|, ours and ref in the same layout. */
export function relErr(ours: Tensor, ref: { data: Float32Array; shape: number[] }): number {
  assert.deepEqual(ours.shape, ref.shape);
  const a = ours.dataSync();
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - ref.data[i]!));
    scale = Math.max(scale, Math.abs(ref.data[i]!));
  }
  return diff / scale;
}

/** The manifest's meta block. */
export function goldenMeta<M = Record<string, unknown>>(): M {
  return JSON.parse(readFileSync(join(GOLDEN, "manifest.json"), "utf8")).meta;
}

export const toNhwc = (x: Tensor) => tf.transpose(x, [0, 2, 3, 1]) as Tensor4D;
export const toNchw = (x: Tensor) => tf.transpose(x, [0, 3, 1, 2]) as Tensor4D;
