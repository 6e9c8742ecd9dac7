// The one reverse loop. Every caller (sweeps, model evaluation, the GLIDE and guided-diffusion pipelines, the CLI)
// samples through `sample`: it picks the sampler from the registry, runs its steps with explicit state, applies
// known-region replacement, counts network evaluations, and owns every intermediate tensor.
import type { GaussianDiffusion } from "../diffusion.ts";
import type { Tensor4D } from "../engine.ts";
import { tf } from "../engine.ts";
import type { Denoiser, NoiseSource, SamplerHooks, StepInfo } from "../types.ts";
import { checkKnown, type KnownRegion, knownRegionDenoisedFn, mergeKnown } from "./known.ts";
import { seededNoise } from "./noise.ts";
import { renoisingSamplers, samplerDef, samplerEta } from "./registry.ts";
import type { SamplerDef, SamplerState, ScheduleName } from "./sampler.ts";
import type { RecordedStep } from "./vp.ts";

export interface SampleOptions extends SamplerHooks {
  /** A registry name; default "ddpm". */
  sampler?: string;
  /** η of samplers that take one (ddim default 0; euler_ancestral and the SDE samplers default 1). */
  eta?: number;
  /** σ-space samplers: number of steps; default the table's length (vp samplers step every respaced index). */
  steps?: number;
  /** Default "default" (each sampler's own). */
  schedule?: ScheduleName;
  /** Per-step standard normal noise; default seededNoise(0). */
  noise?: NoiseSource;
  known?: KnownRegion;
  /** Noise of the "xt" replacement; default seededNoise("known-region"). */
  knownNoise?: NoiseSource;
  /** Network evaluations per sample of one model call at `step` (a strategy's count); default 1. */
  calls?: (step: StepInfo) => number;
  /** VP samplers: push each step's tensors here (golden checks). */
  recordSteps?: RecordedStep[];
}

export interface SampleResult {
  /** The final x0, the caller's. */
  sample: Tensor4D;
  /** Network evaluations per sample over the whole loop. */
  nfe: number;
}

/** Refuses a schedule the sampler does not take, naming it, before any sampling. */
export function checkSchedule(def: SamplerDef, schedule: ScheduleName): void {
  if (!def.schedules.includes(schedule))
    throw new Error(
      `schedule '${schedule}' is not defined for sampler '${def.name}' (it takes: ${def.schedules.join(", ")})`,
    );
}

function tensorsOf(s: SamplerState): Set<Tensor4D> {
  return new Set(Object.values(s).filter((v): v is Tensor4D => v instanceof tf.Tensor));
}

/** Samples from x_T (not disposed) with any registry sampler; `diffusion` is the table the sampler's respacing gave. */
export function sample(
  diffusion: GaussianDiffusion,
  denoise: Denoiser,
  xT: Tensor4D,
  opts: SampleOptions = {},
): SampleResult {
  const run = sampleSteps(diffusion, denoise, xT, opts);
  let r = run.next();
  while (!r.done) r = run.next();
  return r.value;
}

/**
 * `sample`, awaiting `between()` after every step: a signal handler runs there, and `between` may throw to abandon
 * the loop (its tensors are freed, xT is not). A step is one model call of the batch, so a sweep stops within a
 * step of SIGTERM instead of at the end of its batch (tens of seconds at GLIDE's batch sizes on a CPU).
 */
export async function sampleInterruptible(
  diffusion: GaussianDiffusion,
  denoise: Denoiser,
  xT: Tensor4D,
  opts: SampleOptions,
  between: () => Promise<void>,
): Promise<SampleResult> {
  const run = sampleSteps(diffusion, denoise, xT, opts);
  try {
    let r = run.next();
    while (!r.done) {
      await between();
      r = run.next();
    }
    return r.value;
  } finally {
    // Runs the loop's own cleanup when `between` threw; a no-op once the loop has returned.
    run.return(undefined as never);
  }
}

/** The loop itself, one yield after each step (the drivers above decide what happens between steps). */
function* sampleSteps(
  diffusion: GaussianDiffusion,
  denoise: Denoiser,
  xT: Tensor4D,
  opts: SampleOptions,
): Generator<void, SampleResult, void> {
  const def = samplerDef(opts.sampler ?? "ddpm");
  const schedule = opts.schedule ?? "default";
  checkSchedule(def, schedule);
  const known = opts.known;
  const mode = known?.mode ?? "x0";
  if (known) checkKnown(known, xT);
  const inner = opts.denoisedFn;
  const outer = known && mode === "x0" ? knownRegionDenoisedFn(known) : undefined;
  const denoisedFn =
    inner && outer ? (x0: Tensor4D, s: StepInfo) => tf.tidy(() => outer(inner(x0, s), s)) : (outer ?? inner);
  let nfe = 0;
  const calls = opts.calls ?? (() => 1);
  // A renoising prediction (CFG++) changes the update; a sampler without that form must not drop it silently.
  const checked: Denoiser = def.renoise
    ? denoise
    : (x, s) => {
        const pred = denoise(x, s);
        // Thrown inside the step's tidy scope, which frees the prediction.
        if (pred.renoise)
          throw new Error(
            `sampler '${def.name}' does not take a renoising prediction (Prediction.renoise, as cfg++ gives); samplers that do: ${renoisingSamplers().join(", ")}`,
          );
        return pred;
      };
  const run = def.start({
    diffusion,
    denoise: checked,
    hooks: {
      ...(opts.condFn ? { condFn: opts.condFn } : {}),
      ...(denoisedFn ? { denoisedFn } : {}),
      ...(opts.clipDenoised !== undefined ? { clipDenoised: opts.clipDenoised } : {}),
    },
    noise: opts.noise ?? seededNoise(0),
    steps: opts.steps ?? diffusion.numTimesteps,
    schedule,
    eta: samplerEta(def.name, opts.eta),
    onEval: (s) => {
      nfe += calls(s);
    },
    ...(opts.recordSteps ? { recordSteps: opts.recordSteps } : {}),
  });
  const knownNoise = opts.knownNoise ?? seededNoise("known-region");
  // Known pixels after iteration k (k = −1: at the start); the noise stream is keyed k + 1, as it always was.
  const replace = (x: Tensor4D, k: number): Tensor4D =>
    tf.tidy(() => mergeKnown(x, run.noised(known!.image, k, knownNoise(k + 1, [...x.shape])), known!.mask));
  const replacing = known !== undefined && mode === "xt";
  let x = run.init(xT);
  if (replacing) {
    const r = replace(x, -1);
    x.dispose();
    x = r;
  }
  let state: SamplerState = {};
  let done = false;
  try {
    for (let k = 0; k < run.length; k++) {
      opts.onStep?.({ ...run.info(k), total: run.length });
      const prev = x;
      const prevState = state;
      const out = tf.tidy(() => run.step(prev, k, prevState));
      x = out.x;
      state = out.state;
      const keep = tensorsOf(state);
      keep.add(x);
      if (!keep.has(prev)) prev.dispose();
      for (const t of tensorsOf(prevState)) if (!keep.has(t)) t.dispose();
      if (replacing) {
        const r = replace(x, k);
        if (!tensorsOf(state).has(x)) x.dispose();
        x = r;
      }
      yield;
    }
    done = true;
  } finally {
    for (const t of tensorsOf(state)) if (t !== x) t.dispose();
    if (!done) x.dispose();
  }
  return { sample: x, nfe };
}
