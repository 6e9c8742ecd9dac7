// GLIDE's configurations on each runtime: the small golden config (batch 4, 64×64, the golden weights when present)
// or the full base model (batch 2, random weights; opt-in, ~1.5 GB of weights per copy), one Text2ImUNet forward and
// classifier-free-guided sampling (batch/2 prompts → [cond; uncond] rows per forward) through runStage; with
// `torch`, the official code runs side by side on the same config, inputs and weights (./torch.ts). Timings
// recorded elsewhere (the golden manifest's came from another CPU) are never compared with: only a side-by-side
// run on this machine is.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../core/engine.ts";
import { Init } from "../core/layers.ts";
import { defaultGoldenDir } from "../core/paths.ts";
import { GLIDE_BASE_FLAGS, GLIDE_DIFFUSION, glideConfigFromOfficial } from "../nets/configs.ts";
import { loadOfficial } from "../nets/convert.ts";
import { UNet } from "../nets/unet.ts";
import { glideEncoder } from "../pipelines/glide.ts";
import { diffusionFor } from "../pipelines/sampling.ts";
import type { Row } from "./engine.ts";
import { unetFlops } from "./flops.ts";
import { benchForward, benchSampling, modelOn, type RuntimeSpec } from "./runtimes.ts";
import { runTorchGlide, type TorchOptions } from "./torch.ts";

export interface BenchGlideOptions {
  golden?: string;
  /** "small" (the golden config, default) or "base" (GLIDE's full 64×64 base model). */
  model?: "small" | "base";
  /** Respaced sampling steps on ONNX Runtime and torch (default 20, as the manifest's figure). */
  steps?: number;
  /** Sampling steps on TensorFlow.js, whose steps are ~10× slower (default min(steps, 3)); the figure is per step. */
  tfjsSteps?: number;
  /** Minimum wall time of each forward timing loop, ms (default 3000). */
  minMs?: number;
  /** Default 4 (small), 2 (base). */
  batch?: number;
  /** Runtimes to measure (default: TensorFlow.js on the active backend). */
  specs?: readonly RuntimeSpec[];
  /** Also time the official code (python3 + torch + a glide-text2im checkout; the caller checked they exist). */
  torch?: TorchOptions;
}

function readManifestMeta(golden: string): Record<string, unknown> | undefined {
  const path = join(golden, "manifest.json");
  if (!existsSync(path)) return undefined;
  return (JSON.parse(readFileSync(path, "utf8")) as { meta?: Record<string, unknown> }).meta;
}

/** Deterministic inputs: seeded x, spread timesteps, and prompts of 5 + 3i real tokens (the rest padding). */
function glideInputs(
  unet: UNet,
  batch: number,
): { x: Tensor4D; t: Tensor1D; tokens: Tensor2D; mask: Tensor2D } {
  const s = unet.config.imageSize;
  const ctx = unet.config.text?.ctx ?? 1;
  const vocab = unet.config.text?.vocabSize ?? 2;
  const ids = new Int32Array(batch * ctx).fill(vocab - 1);
  const mask = new Float32Array(batch * ctx);
  for (let i = 0; i < batch; i++) {
    for (let j = 0; j < Math.min(ctx, 5 + 3 * i); j++) {
      ids[i * ctx + j] = (i * 7919 + j * 104729) % (vocab - 1);
      mask[i * ctx + j] = 1;
    }
  }
  return {
    x: tf.randomNormal([batch, s, s, 3], 0, 1, "float32", 0) as Tensor4D,
    t: tf.tensor1d(
      Array.from({ length: batch }, (_, i) => (i * 997) % 1000),
      "float32",
    ) as Tensor1D,
    tokens: tf.tensor2d(ids, [batch, ctx], "int32") as Tensor2D,
    mask: tf.tensor2d(mask, [batch, ctx]) as Tensor2D,
  };
}

export async function benchGlide(opts: BenchGlideOptions = {}): Promise<Row[]> {
  const golden = opts.golden ?? defaultGoldenDir();
  const which = opts.model ?? "small";
  let flags: Record<string, unknown>;
  if (which === "small") {
    const small = readManifestMeta(golden)?.small_glide as Record<string, unknown> | undefined;
    if (!small) throw new Error(`bench glide: ${join(golden, "manifest.json")} has no meta.small_glide`);
    flags = small;
  } else {
    flags = { ...GLIDE_BASE_FLAGS };
  }
  const config = glideConfigFromOfficial(flags);
  const unet = new UNet(new Init(1), config);
  const weights = which === "small" ? join(golden, "weights", "glide_small.safetensors") : undefined;
  const loaded = weights !== undefined && existsSync(weights);
  if (loaded) loadOfficial(unet, weights, "glide-unet");
  const asked = opts.specs ?? [{ label: `tfjs-${tf.getBackend()}`, runtime: "tfjs" as const }];
  // wasm32 addresses 4 GB: the base model's 1.5 GB of weights, XNNPACK's packed copy of them and the activations
  // do not fit (measured: the conv setup fails, then the heap is corrupt), so that pairing is skipped, not tried.
  const tooBig = which === "base" && tf.getBackend() === "wasm";
  const specs = tooBig ? asked.filter((s) => s.runtime !== "tfjs") : asked;
  if (tooBig && specs.length < asked.length)
    process.stdout.write("GLIDE base on tfjs-wasm: skipped (the 4 GB wasm heap cannot hold it)\n");
  const batch = opts.batch ?? (which === "small" ? 4 : 2);
  const steps = opts.steps ?? 20;
  const tfjsSteps = opts.tfjsSteps ?? Math.min(steps, 3);
  const minMs = opts.minMs ?? 3000;
  const name = which === "small" ? "GLIDE small" : "GLIDE base";
  const rows: Row[] = [];
  const inputs = glideInputs(unet, batch);
  try {
    const what = `${(unet.numParams() / 1e6).toFixed(1)}M params, ${loaded ? "golden" : "random"} weights`;
    const fwd = benchForward(
      {
        name,
        unet,
        batch,
        x: inputs.x,
        t: inputs.t,
        cond: { tokens: inputs.tokens, mask: inputs.mask },
        detail: what,
      },
      specs,
      minMs,
    );
    rows.push(...fwd.rows);
    // Prompts as already-tokenized ids: BPE files are the user's, and timing does not depend on the ids.
    const prompts = Array.from({ length: Math.max(1, batch / 2) }, (_, i) => `prompt ${i}`);
    const text = (p: string) => [...p].map((c) => c.charCodeAt(0));
    const sampling = benchSampling(
      {
        name,
        unet,
        models: { encode: glideEncoder(unet, text), unconditionalPrompt: "" },
        strategies: [{ label: "cfg", config: { kind: "cfg", scale: 3 } }],
        prompts,
        steps: (spec) => (spec.runtime === "tfjs" ? tfjsSteps : steps),
        respacing: (n) => diffusionFor(unet, GLIDE_DIFFUSION.base.schedule, String(n)),
      },
      specs,
    );
    rows.push(...sampling);
    if (opts.torch)
      rows.push(
        ...torchRows(opts.torch, flags, unet, inputs, weights && loaded ? weights : undefined, {
          name,
          batch,
          steps,
          specs,
        }),
      );
  } finally {
    tf.dispose(Object.values(inputs));
    unet.dispose();
  }
  return rows;
}

/**
 * The official code on the same flags, inputs and (when loaded) weights: forward and cfg-sampling rows labelled
 * "torch xN" for each thread count, and, with shared weights, the largest difference between its forward output
 * and ours (ONNX Runtime's when measured).
 */
function torchRows(
  torch: TorchOptions,
  flags: Record<string, unknown>,
  unet: UNet,
  inputs: { x: Tensor4D; t: Tensor1D; tokens: Tensor2D; mask: Tensor2D },
  weights: string | undefined,
  c: { name: string; batch: number; steps: number; specs: readonly RuntimeSpec[] },
): Row[] {
  const [b, h, w] = inputs.x.shape;
  const flops = unetFlops(unet, b, h, w).total;
  let ours: { label: string; out: Float32Array } | undefined;
  const rows: Row[] = [];
  for (const threads of torch.threads ?? [1, 2]) {
    const r = runTorchGlide(torch, flags, inputs, weights, c.steps, threads);
    const label = `torch-${r.torch} x${r.threads}`;
    let agree = "random weights on both sides: outputs not compared";
    if (weights && r.out) {
      ours ??= ourOutput(unet, inputs, c.specs);
      let d = 0;
      let mx = 0;
      for (let i = 0; i < ours.out.length; i++) {
        d = Math.max(d, Math.abs(ours.out[i]! - r.out[i]!));
        mx = Math.max(mx, Math.abs(r.out[i]!));
      }
      agree = `output vs ${ours.label}: max rel diff ${(d / mx).toExponential(1)}`;
    }
    const blas = /openblas|mkl|blis/i.test(r.blas)
      ? ""
      : `; BLAS ${r.blas || "unknown"}: not OpenBLAS/MKL, expect a much slower torch (e.g. apt-get install libopenblas0-pthread)`;
    const fwdMs = r.forwardS.median * 1000;
    rows.push(
      {
        name: `${c.name} forward`,
        backend: label,
        value: flops / fwdMs / 1e6,
        unit: "GFLOP/s",
        ms: fwdMs,
        detail: `batch ${c.batch}, ${h}x${w}, official glide-text2im; min ${(r.forwardS.min * 1000).toFixed(1)} ms of ${r.forwardS.reps}; ${agree}${blas}`,
      },
      {
        name: `${c.name} cfg sampling`,
        backend: label,
        value: 1 / r.cfgStepS,
        unit: "step/s",
        ms: r.cfgStepS * 1000,
        detail: `${c.batch / 2} prompts → ${c.batch} rows per forward, ${r.cfgSteps} DDPM steps (text2im notebook's model_fn)`,
      },
    );
  }
  return rows;
}

/** Our forward output (NCHW, eps and variance channels) on the first ONNX runtime measured, else the first one. */
function ourOutput(
  unet: UNet,
  inputs: { x: Tensor4D; t: Tensor1D; tokens: Tensor2D; mask: Tensor2D },
  specs: readonly RuntimeSpec[],
): { label: string; out: Float32Array } {
  const spec = specs.find((s) => s.runtime === "onnx") ?? specs[0]!;
  const m = modelOn(unet, spec);
  try {
    const out = tf.tidy(() => {
      const p = m.fn(inputs.x, inputs.t, { tokens: inputs.tokens, mask: inputs.mask });
      const full = p.varValues ? tf.concat([p.out, p.varValues], 3) : p.out;
      return tf.transpose(full, [0, 3, 1, 2]).dataSync() as Float32Array;
    });
    return { label: spec.label, out };
  } finally {
    m.dispose();
  }
}
