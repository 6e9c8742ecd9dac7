// GLIDE's small golden config (batch 4, 64×64) on the active backend: one Text2ImUNet forward, and whole
// classifier-free-guided sampling (2 prompts → [cond; uncond] = 4 rows per forward) through the glide pipeline, so
// the figures compare with the official PyTorch timings in the golden manifest (meta.timings.glide_small_forward_b4,
// glide_small_cfg_sampling_20steps_b4.per_step_s). The golden weights are loaded when present; timing does not
// depend on them, so random weights stand in otherwise.
import "../core/ops.ts";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type Tensor, type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../core/engine.ts";
import { Init } from "../core/layers.ts";
import { defaultGoldenDir } from "../core/paths.ts";
import { glideConfigFromOfficial } from "../models/configs.ts";
import { loadOfficial } from "../models/convert.ts";
import { UNet } from "../models/unet.ts";
import { glideText2Im } from "../pipelines/glide.ts";
import type { Row } from "./engine.ts";

export interface BenchGlideOptions {
  golden?: string;
  /** Respaced sampling steps (default 20, as the manifest's figure). */
  steps?: number;
  /** Minimum wall time of the forward timing loop, ms (default 3000). */
  minMs?: number;
  batch?: number;
}

export interface GlideReference {
  forwardS?: number;
  cfgPerStepS?: number;
}

function readManifestMeta(golden: string): Record<string, unknown> | undefined {
  const path = join(golden, "manifest.json");
  if (!existsSync(path)) return undefined;
  return (JSON.parse(readFileSync(path, "utf8")) as { meta?: Record<string, unknown> }).meta;
}

/** The official PyTorch figures recorded in the golden manifest (2-core CPU, torch 1.13). */
export function glideReference(golden = defaultGoldenDir()): GlideReference {
  const t = readManifestMeta(golden)?.timings as
    | Record<string, { median_s?: number; per_step_s?: number }>
    | undefined;
  const forwardS = t?.glide_small_forward_b4?.median_s;
  const cfgPerStepS = t?.glide_small_cfg_sampling_20steps_b4?.per_step_s;
  return {
    ...(forwardS !== undefined ? { forwardS } : {}),
    ...(cfgPerStepS !== undefined ? { cfgPerStepS } : {}),
  };
}

export async function benchGlide(opts: BenchGlideOptions = {}): Promise<Row[]> {
  const golden = opts.golden ?? defaultGoldenDir();
  const meta = readManifestMeta(golden);
  const flags = meta?.small_glide as Record<string, unknown> | undefined;
  if (!flags) throw new Error(`bench glide: ${join(golden, "manifest.json")} has no meta.small_glide`);
  const config = glideConfigFromOfficial(flags);
  const unet = new UNet(new Init(1), config);
  const weights = join(golden, "weights", "glide_small.safetensors");
  const loaded = existsSync(weights);
  if (loaded) loadOfficial(unet, weights, "glide-unet");
  const backend = tf.getBackend();
  const batch = opts.batch ?? 4;
  const steps = opts.steps ?? 20;
  const minMs = opts.minMs ?? 3000;
  const s = config.imageSize;
  const ctx = config.text?.ctx ?? 1;
  const ref = glideReference(golden);
  const rows: Row[] = [];
  try {
    const x = tf.randomNormal([batch, s, s, 3], 0, 1, "float32", 0) as Tensor4D;
    const t = tf.tensor1d(
      Array.from({ length: batch }, (_, i) => (i * 997) % 1000),
      "int32",
    ) as Tensor1D;
    const tokens = tf.fill([batch, ctx], (config.text?.vocabSize ?? 1) - 1, "int32") as Tensor2D;
    const mask = tf.zeros([batch, ctx]) as Tensor2D;
    // tidy: a bare forward would leave every intermediate activation behind on each repetition.
    const forward = (): Tensor => tf.tidy(() => unet.forward(x, t, { tokens, mask }));
    const first = forward(); // warm-up: kernel selection, wasm memory growth
    await first.data();
    first.dispose();
    let reps = 0;
    const t0 = performance.now();
    while (reps < 2 || performance.now() - t0 < minMs) {
      const out = forward();
      await out.data();
      out.dispose();
      reps++;
    }
    const fwdMs = (performance.now() - t0) / reps;
    tf.dispose([x, t, tokens, mask]);
    const what = `small golden config, ${(unet.numParams() / 1e6).toFixed(2)}M params, ${loaded ? "golden" : "random"} weights`;
    rows.push({
      name: "GLIDE small forward",
      backend,
      value: (batch * 1000) / fwdMs,
      unit: "eval/s",
      ms: fwdMs,
      detail: `batch ${batch}, ${s}x${s}, ${what}${ref.forwardS ? `; PyTorch b4 ${(ref.forwardS * 1000).toFixed(0)} ms, speed ${((ref.forwardS * 1000) / fwdMs).toFixed(2)}x of it` : ""}`,
    });
    // Prompts as already-tokenized ids: BPE files are the user's, and timing does not depend on the ids.
    const prompts = Array.from({ length: batch / 2 }, (_, i) => `prompt ${i}`);
    const t1 = performance.now();
    const r = glideText2Im({
      base: unet,
      text: (p) => [...p].map((c) => c.charCodeAt(0)),
      prompts,
      strategy: { kind: "cfg", scale: 3 },
      respacing: String(steps),
      seed: 0,
    });
    await r.base.data();
    const stepMs = (performance.now() - t1) / steps;
    r.dispose();
    rows.push({
      name: `GLIDE small cfg sampling (${steps} steps)`,
      backend,
      value: 1000 / stepMs,
      unit: "step/s",
      ms: stepMs,
      detail: `${prompts.length} prompts → ${batch} rows per forward, DDPM${ref.cfgPerStepS ? `; PyTorch b4 ${(ref.cfgPerStepS * 1000).toFixed(0)} ms/step, speed ${((ref.cfgPerStepS * 1000) / stepMs).toFixed(2)}x of it` : ""}`,
    });
  } finally {
    unet.dispose();
  }
  return rows;
}
