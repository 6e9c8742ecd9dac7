// What the two VP-space samplers (ddpm, ddim) share: the model's p(x_{t-1}|x_t) through the respaced tables, the
// recording of steps for golden checks, and a run that visits every index of the respaced table, noisiest first.
import type { GaussianDiffusion, PMeanVariance } from "../diffusion.ts";
import type { Tensor4D } from "../engine.ts";
import { tf } from "../engine.ts";
import type { Denoiser, NoiseSource, SamplerHooks, StepInfo } from "../types.ts";
import type { RunContext, SamplerRun, SamplerState, ScheduleName } from "./sampler.ts";
import { spacedTimesteps } from "./schedules.ts";

/** Host copies of one step's tensors, for golden checks and debugging. */
export interface RecordedStep extends StepInfo {
  shape: number[];
  xIn: Float32Array;
  mean: Float32Array;
  logVariance: Float32Array;
  predXstart: Float32Array;
  eps: Float32Array;
  sample: Float32Array;
}

export interface StepOptions extends SamplerHooks {
  /** Defaults to seededNoise(0). */
  noise?: NoiseSource;
  /** When given, every step pushes a RecordedStep here (costly: copies five tensors to the host per step). */
  recordSteps?: RecordedStep[];
}

export interface StepOutput {
  sample: Tensor4D;
  predXstart: Tensor4D;
}

export function record(
  opts: StepOptions,
  step: StepInfo,
  x: Tensor4D,
  out: PMeanVariance,
  sample: Tensor4D,
): void {
  opts.recordSteps?.push({
    ...step,
    shape: [...x.shape],
    xIn: x.dataSync() as Float32Array,
    mean: out.mean.dataSync() as Float32Array,
    logVariance: out.logVariance.dataSync() as Float32Array,
    predXstart: out.predXstart.dataSync() as Float32Array,
    eps: out.eps.dataSync() as Float32Array,
    sample: sample.dataSync() as Float32Array,
  });
}

/** p(x_{t−1}|x_t) of the denoiser's prediction at `step`, and its renoising prediction's ε when it has one. */
export function pmvFor(
  diffusion: GaussianDiffusion,
  denoise: Denoiser,
  x: Tensor4D,
  step: StepInfo,
  opts: SamplerHooks,
): PMeanVariance & { renoiseEps?: Tensor4D } {
  const pred = denoise(x, step);
  const denoisedFn = opts.denoisedFn;
  const pmv = diffusion.pMeanVariance(pred, x, step.index, {
    clipDenoised: opts.clipDenoised ?? true,
    ...(denoisedFn ? { denoisedFn: (x0: Tensor4D) => denoisedFn(x0, step) } : {}),
  });
  if (!pred.renoise) return pmv;
  const r = pred.renoise;
  const t = step.index;
  const renoiseEps =
    pred.kind === "eps"
      ? r
      : diffusion.predictEpsFromXstart(x, t, pred.kind === "v" ? diffusion.predictXstartFromV(x, t, r) : r);
  return { ...pmv, renoiseEps };
}

/**
 * The respacing of a VP sampler: its own default, or diffusers' timestep spacing as an explicit step set. The
 * σ schedules (karras, exponential) have no VP form here and are refused by the loop before sampling.
 */
export function vpRespacing(
  steps: number,
  schedule: ScheduleName,
  T: number,
  own: (steps: number) => string,
): string | number[] {
  if (schedule === "leading" || schedule === "trailing" || schedule === "linspace")
    return spacedTimesteps(schedule, steps, T);
  return own(steps);
}

/** A VP step function: ddpmStep or ddimStep. */
export type VpStep = (
  diffusion: GaussianDiffusion,
  denoise: Denoiser,
  x: Tensor4D,
  index: number,
  opts: StepOptions & { eta?: number },
) => StepOutput;

/** A run over every respaced index, noisiest first; x stays VP x_t, known pixels are q_sample'd to the next index. */
export function vpRun(ctx: RunContext, step: VpStep): SamplerRun {
  const d = ctx.diffusion;
  const total = d.numTimesteps;
  const opts = {
    ...ctx.hooks,
    noise: ctx.noise,
    eta: ctx.eta,
    ...(ctx.recordSteps ? { recordSteps: ctx.recordSteps } : {}),
  };
  const denoise: Denoiser = (x, s) => {
    ctx.onEval(s);
    return ctx.denoise(x, s);
  };
  return {
    length: total,
    info: (k) => d.stepInfo(total - 1 - k),
    init: (xT) => tf.clone(xT),
    noised: (image, k, noise) => {
      const index = total - 2 - k;
      return index < 0 ? tf.clone(image) : d.qSample(image, index, noise);
    },
    step: (x, k, state: SamplerState) => {
      const { sample, predXstart } = step(d, denoise, x, total - 1 - k, opts);
      predXstart.dispose();
      return { x: sample, state };
    },
  };
}
