// `guidance-lab models evaluate`: the figures a zoo model's card records, recomputed from the shipped weights on
// renders no training step drew (their own seed stream). Each task gets the test that says whether the model can do
// the one job guidance or evaluation asks of it:
//   eval-clip    zero-shot caption retrieval on clean renders (the CLIP score trusts exactly this);
//   classifier   top-1 accuracy on q_sample-noised renders as t rises (classifier guidance follows ∇log p(y|x_t));
//   noised-clip  caption retrieval on noised renders as t rises (CLIP guidance follows its similarity at x_t);
//   denoiser     oracle prompt accuracy of classifier-free-guided samples (s = 3) against s = 1, the same for the
//                early checkpoint (autoguidance's weaker model), and the Fréchet distance of unconditional samples
//                to renders of the training distribution in evaluation-CLIP features.
// The experiment is built from the shared pieces: samples come from the batch sampler (src/pipelines/sampling.ts)
// under the strategy registry, and every figure from the metrics (src/metrics/); judges.ts holds the classifier and
// CLIP tests, denoiser.ts the denoiser's, each a sequence of named steps.
import type { Runtime } from "../../onnx/choice.ts";
import { type ModelInfo, modelInfo, modelsDir } from "../registry.ts";
import { evaluateDenoiser } from "./denoiser.ts";
import { evaluateJudge } from "./judges.ts";

export { CLASS_CAPTIONS, labelledRenders, noisedAccuracy, T_GRID } from "./judges.ts";

export interface EvaluateOptions {
  dir?: string;
  /** Clean renders for the retrieval and classification figures (the 1,000 by default). */
  renders?: number;
  /** Renders per point of the accuracy-versus-t curves. */
  curveRenders?: number;
  /** Denoiser: samples per single-object prompt (the colour suite gets 1/8 as many per prompt), and unconditional samples for the Fréchet distance. */
  samplesPerPrompt?: number;
  fdSamples?: number;
  steps?: number;
  batchSize?: number;
  runtime?: Runtime;
  /** The evaluation CLIP for the Fréchet distance (default "eval-clip"). */
  evalClip?: string;
  /** The early checkpoint compared with a denoiser (default "denoiser-early" when evaluating "denoiser"). */
  early?: string;
  log?: (line: string) => void;
}

export interface Figure {
  key: string;
  value: number;
  description: string;
}

export interface Evaluation {
  name: string;
  task: ModelInfo["task"];
  step: number;
  figures: Figure[];
  /** Accuracy versus t (classifier, noised CLIP). */
  curve?: { t: number[]; accuracy: number[] };
  settings: Record<string, unknown>;
  seconds: number;
}

export async function evaluateModel(name: string, opts: EvaluateOptions = {}): Promise<Evaluation> {
  const t0 = performance.now();
  const dir = opts.dir ?? modelsDir();
  const log = opts.log ?? ((s: string) => process.stderr.write(s));
  const info = modelInfo(name, dir);
  const batchSize = opts.batchSize ?? 50;
  const result =
    info.task === "denoiser"
      ? await evaluateDenoiser(
          name,
          {
            dir,
            renders: 0,
            curveRenders: 0,
            samplesPerPrompt: opts.samplesPerPrompt ?? 128,
            fdSamples: opts.fdSamples ?? 200,
            steps: opts.steps ?? 50,
            batchSize,
            runtime: opts.runtime ?? "tfjs",
            evalClip: opts.evalClip ?? "eval-clip",
            ...((opts.early ?? (name === "denoiser" ? "denoiser-early" : undefined))
              ? { early: opts.early ?? "denoiser-early" }
              : {}),
          },
          log,
        )
      : evaluateJudge(
          name,
          {
            dir,
            renders: opts.renders ?? 1000,
            curveRenders: opts.curveRenders ?? 200,
            batchSize: opts.batchSize ?? 100,
          },
          log,
        );
  return { ...result, seconds: (performance.now() - t0) / 1000 };
}
