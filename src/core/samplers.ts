// The samplers' public entry: the registry, the one reverse loop and the VP steps the golden checks replay. Each
// sampler lives in its own file under samplers/ (see samplers/README.md).
import type { GaussianDiffusion } from "./diffusion.ts";
import type { Tensor4D } from "./engine.ts";
import type { DdimOptions } from "./samplers/ddim.ts";
import { type SampleOptions, sample } from "./samplers/loop.ts";
import type { StepOptions } from "./samplers/vp.ts";
import type { Denoiser } from "./types.ts";

export { type DdimOptions, ddimStep } from "./samplers/ddim.ts";
export { ddpmStep } from "./samplers/ddpm.ts";
export {
  checkKnown,
  type KnownRegion,
  knownRegionDenoisedFn,
  mergeKnown,
} from "./samplers/known.ts";
export {
  checkSchedule,
  type SampleOptions,
  type SampleResult,
  sample,
  sampleInterruptible,
} from "./samplers/loop.ts";
export { seededNoise } from "./samplers/noise.ts";
export {
  SAMPLER_NAMES,
  SAMPLERS,
  type SamplerName,
  samplerDef,
  samplerEta,
  samplerTable,
} from "./samplers/registry.ts";
export {
  type SamplerDef,
  type SamplerRun,
  type SamplerState,
  SCHEDULES,
  type ScheduleName,
} from "./samplers/sampler.ts";
export { SigmaView } from "./samplers/sigma.ts";
export type { RecordedStep, StepOptions, StepOutput } from "./samplers/vp.ts";

/** Full ancestral sampling (Ho et al. 2020 Algorithm 2) through the one loop. xT is not disposed. */
export function sampleDdpm(
  diffusion: GaussianDiffusion,
  denoise: Denoiser,
  xT: Tensor4D,
  opts: StepOptions & Omit<SampleOptions, "sampler"> = {},
): Tensor4D {
  return sample(diffusion, denoise, xT, { ...opts, sampler: "ddpm" }).sample;
}

/** Full DDIM sampling (Song et al. 2021 eq. 12) through the one loop. xT is not disposed. */
export function sampleDdim(
  diffusion: GaussianDiffusion,
  denoise: Denoiser,
  xT: Tensor4D,
  opts: DdimOptions & Omit<SampleOptions, "sampler"> = {},
): Tensor4D {
  return sample(diffusion, denoise, xT, { ...opts, sampler: "ddim" }).sample;
}
