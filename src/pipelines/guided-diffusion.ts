// Classifier-guided class-conditional sampling with guided-diffusion's UNet and noised classifier (Dhariwal & Nichol
// 2021, classifier_sample.py) on user-supplied models, through the strategies registry's `classifier` strategy (or
// any other config) and the core samplers. Labels travel as prompts ("207") so that the registry's string-keyed
// bag serves class conditioning unchanged.
import type { GaussianDiffusion } from "../core/diffusion.ts";
import type { Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import type { ScheduleName } from "../core/samplers.ts";
import type { StepInfo } from "../core/types.ts";
import type { EncoderUNet } from "../nets/encoder-unet.ts";
import type { UNet } from "../nets/unet.ts";
import type { GuidanceModels } from "../strategies/strategy.ts";
import { diffusionFor, runStage, spatialModel, stageTable } from "./sampling.ts";

export interface ClassifierGuidedOptions {
  unet: UNet;
  /** Required by the default strategy (scale > 0). */
  classifier?: EncoderUNet;
  /** One class index per sample. */
  labels: readonly number[];
  /** guided-diffusion's classifier_scale, default 1. */
  scale?: number;
  /** Raw strategy config overriding the default { kind: "classifier", scale, base: { kind: "none" } }. */
  strategy?: unknown;
  /** The model's diffusion; else `betaSchedule` (default "linear", guided-diffusion's default) and `respacing` (default "250"). */
  diffusion?: GaussianDiffusion;
  betaSchedule?: string;
  respacing?: string;
  /** A registry sampler; default "ddpm". σ-space samplers take as many steps as `respacing` keeps. */
  sampler?: string;
  schedule?: ScheduleName;
  eta?: number;
  seed?: number | string;
  onStep?: (info: StepInfo & { total: number }) => void;
}

export interface ClassifierGuidedResult {
  /** [B, s, s, 3] in [-1, 1]. */
  samples: Tensor4D;
  nfe: number;
}

function parseLabel(p: string): number {
  const y = Number(p);
  if (!Number.isInteger(y) || y < 0)
    throw new Error(`guided-diffusion pipeline: '${p}' is not a class index`);
  return y;
}

export function classifierGuidedSample(o: ClassifierGuidedOptions): ClassifierGuidedResult {
  const classes = o.unet.config.numClasses;
  for (const y of o.labels) {
    if (!Number.isInteger(y) || y < 0 || (classes !== undefined && y >= classes)) {
      throw new Error(`guided-diffusion pipeline: label ${y} outside 0..${(classes ?? Infinity) - 1}`);
    }
  }
  const models: GuidanceModels = {
    model: spatialModel(o.unet),
    // An unconditional UNet ignores labels; the classifier alone then steers sampling.
    encode: (ps) => (classes !== undefined ? { y: tf.tensor1d(ps.map(parseLabel), "int32") } : {}),
    classifierLabel: parseLabel,
    ...(o.classifier ? { classifier: o.classifier } : {}),
  };
  const s = o.unet.config.imageSize;
  const r = runStage({
    models,
    strategy: o.strategy ?? { kind: "classifier", scale: o.scale ?? 1, base: { kind: "none" } },
    prompts: o.labels.map(String),
    ...(o.diffusion
      ? { diffusion: o.diffusion, steps: o.diffusion.numTimesteps }
      : stageTable(o.sampler, o.respacing ?? "250", 1000, (r) =>
          diffusionFor(o.unet, o.betaSchedule ?? "linear", r),
        )),
    shape: [s, s, o.unet.config.inChannels],
    seed: o.seed ?? 0,
    stage: "gd",
    ...(o.sampler ? { sampler: o.sampler } : {}),
    ...(o.schedule ? { schedule: o.schedule } : {}),
    ...(o.eta !== undefined ? { eta: o.eta } : {}),
    ...(o.onStep ? { onStep: o.onStep } : {}),
  });
  return { samples: r.sample, nfe: r.nfe };
}
