// Denoiser forwards and sampling steps on each runtime: ONNX Runtime with 1 and 2 threads, and TensorFlow.js on the
// active backend. Every runtime runs the same UNet object (same weights, inputs and conditioning) through the same
// ModelFn seam the samplers use, so a figure includes what sampling pays per call (feeds to the worker, the one
// copy back into a tensor). Times are medians over the repetitions: the machine may be shared (see `load`).
import { loadavg } from "node:os";
import type { GaussianDiffusion } from "../core/diffusion.ts";
import { type Tensor, type Tensor1D, type Tensor4D, tf } from "../core/engine.ts";
import type { Prediction } from "../core/types.ts";
import { type ModelFn, unetModel } from "../nets/denoiser.ts";
import type { Conditioning, UNet } from "../nets/unet.ts";
import { onnxModelFn, onnxUnavailable } from "../onnx/runtime.ts";
import { runStage } from "../pipelines/sampling.ts";
import type { GuidanceModels } from "../strategies/strategy.ts";
import type { Row } from "./engine.ts";
import { unetFlops } from "./flops.ts";

export interface RuntimeSpec {
  /** Row label, e.g. "onnx x2", "tfjs-wasm". */
  label: string;
  runtime: "onnx" | "tfjs";
  threads?: number;
  /** Where gradient guides run in sampling rows (default: `runtime`). */
  guides?: "onnx" | "tfjs";
}

/** ONNX Runtime with 1 and 2 threads (when it loads), then TensorFlow.js on the active backend. */
export async function runtimeSpecs(): Promise<{ specs: RuntimeSpec[]; onnxMissing?: string }> {
  const tfjs: RuntimeSpec = { label: `tfjs-${tf.getBackend()}`, runtime: "tfjs" };
  const why = await onnxUnavailable();
  if (why) return { specs: [tfjs], onnxMissing: why };
  return {
    specs: [
      { label: "onnx x1", runtime: "onnx", threads: 1 },
      { label: "onnx x2", runtime: "onnx", threads: 2 },
      tfjs,
    ],
  };
}

/** The UNet's ModelFn on a runtime; dispose frees the ONNX worker and sessions. */
export function modelOn(unet: UNet, spec: RuntimeSpec): { fn: ModelFn; dispose(): void } {
  if (spec.runtime === "tfjs") return { fn: unetModel(unet), dispose: () => {} };
  const fn = onnxModelFn(unet, spec.threads !== undefined ? { threads: spec.threads } : {});
  return { fn, dispose: () => fn.runner.dispose() };
}

export interface Timing {
  medianMs: number;
  minMs: number;
  reps: number;
}

/**
 * One warm-up call (session creation, kernel selection, wasm memory growth), then repetitions until `minMs` has
 * passed and at least `minReps` ran. `run` must free what it makes.
 */
export function timeSync(run: () => void, minMs: number, minReps = 2): Timing {
  run();
  const times: number[] = [];
  const t0 = performance.now();
  while (times.length < minReps || performance.now() - t0 < minMs) {
    const t = performance.now();
    run();
    times.push(performance.now() - t);
  }
  return { medianMs: median(times), minMs: Math.min(...times), reps: times.length };
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Forces a prediction's values (a no-op for ONNX's, which are already host data) and frees it. */
function consume(p: Prediction): void {
  const ts: Tensor[] = [p.out, ...(p.varValues ? [p.varValues] : [])];
  for (const t of ts) t.dataSync();
  tf.dispose(ts);
}

export interface ForwardCase {
  /** e.g. "GLIDE small". */
  name: string;
  unet: UNet;
  batch: number;
  /** Inputs and conditioning for the batch (the caller owns them). */
  x: Tensor4D;
  t: Tensor1D;
  cond: Conditioning;
  /** Shapes and weights, for the detail column. */
  detail: string;
}

export interface ForwardResult {
  spec: RuntimeSpec;
  timing: Timing;
  gflops: number;
}

/** Forward ms and GFLOP/s of one model at one batch size on each runtime. */
export function benchForward(
  c: ForwardCase,
  specs: readonly RuntimeSpec[],
  minMs: number,
): { rows: Row[]; results: ForwardResult[] } {
  const [, h, w] = c.x.shape;
  const flops = unetFlops(c.unet, c.batch, h, w).total;
  const rows: Row[] = [];
  const results: ForwardResult[] = [];
  for (const spec of specs) {
    const m = modelOn(c.unet, spec);
    let timing: Timing;
    try {
      timing = timeSync(() => consume(m.fn(c.x, c.t, c.cond)), minMs);
    } finally {
      m.dispose();
    }
    const gflops = flops / timing.medianMs / 1e6;
    results.push({ spec, timing, gflops });
    rows.push({
      name: `${c.name} forward`,
      backend: spec.label,
      value: gflops,
      unit: "GFLOP/s",
      ms: timing.medianMs,
      detail: `batch ${c.batch}, ${h}x${w}, ${c.detail}; ${(flops / 1e9).toFixed(2)} GFLOP, ${((c.batch * 1000) / timing.medianMs).toFixed(1)} eval/s, min ${timing.minMs.toFixed(1)} ms of ${timing.reps}`,
    });
  }
  return { rows, results };
}

export interface SamplingCase {
  name: string;
  unet: UNet;
  /** Everything the strategies need except `model` (encode, classifier, ...). */
  models: Omit<GuidanceModels, "model">;
  strategies: { label: string; config: unknown }[];
  prompts: readonly string[];
  /** Step counts per runtime: slow runtimes may time fewer steps (the figure is per step). */
  steps: (spec: RuntimeSpec) => number;
  respacing: (steps: number) => GaussianDiffusion;
  /** Gradient guides (classifier, CLIP) for a spec, overriding `models`'; dispose frees their sessions. */
  guides?: (spec: RuntimeSpec) => { models: Partial<GuidanceModels>; dispose(): void };
}

/**
 * Sampling steps per second for each strategy on each runtime: the whole loop of runStage (strategy binding,
 * seeded x_T, the sampler with the strategy's hooks; the median step), after one untimed single-step loop that
 * creates the ONNX sessions (and traces the guides' gradient graphs). Gradient guides come from `c.guides` per spec.
 */
export function benchSampling(c: SamplingCase, specs: readonly RuntimeSpec[]): Row[] {
  const rows: Row[] = [];
  const [h, w, ch] = [c.unet.config.imageSize, c.unet.config.imageSize, c.unet.config.inChannels];
  for (const spec of specs) {
    const m = modelOn(c.unet, spec);
    const guides = c.guides?.(spec);
    try {
      for (const s of c.strategies) {
        // Each step's wall time: the median over the loop shrugs off a stall of the shared machine.
        // onStep fires as each step starts; the last mark is the loop's end.
        const loop = (diffusion: GaussianDiffusion, marks: number[]) => {
          const r = runStage({
            models: { ...c.models, ...guides?.models, model: m.fn },
            strategy: s.config,
            prompts: c.prompts,
            diffusion,
            shape: [h, w, ch],
            seed: 0,
            stage: "bench",
            onStep: () => marks.push(performance.now()),
          });
          r.sample.dataSync();
          marks.push(performance.now());
          r.sample.dispose();
          return r.nfe;
        };
        loop(c.respacing(1), []);
        const steps = c.steps(spec);
        const marks: number[] = [];
        const nfe = loop(c.respacing(steps), marks);
        const times = marks.slice(1).map((t, i) => t - marks[i]!);
        const stepMs = median(times);
        const meanMs = (marks[marks.length - 1]! - marks[0]!) / steps;
        rows.push({
          name: `${c.name} ${s.label} sampling`,
          backend: spec.label,
          value: 1000 / stepMs,
          unit: "step/s",
          ms: stepMs,
          detail: `${c.prompts.length} samples, median of ${steps} DDPM steps (mean ${meanMs.toFixed(1)} ms), ${(nfe / steps).toFixed(1)} NFE per sample per step`,
        });
      }
    } finally {
      guides?.dispose();
      m.dispose();
    }
  }
  return rows;
}

/** The 1-minute load average and core count, to judge how contended the machine was during a run. */
export function load(): string {
  const [one, five] = loadavg();
  return `load average ${one!.toFixed(2)} (1 min), ${five!.toFixed(2)} (5 min)`;
}
