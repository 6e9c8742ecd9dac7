// What a cell's metrics are computed from, kept per sample so that every metric and every interval can be rebuilt
// from the run folder alone (src/report/observations.ts writes and reads them; src/stats resamples them). Only
// what the named metrics need is observed, and the embeddings come from the same memoised context as the
// metrics' own, so observing costs no extra forward passes.
import { clipScore } from "./clip-score.ts";
import { embeddingDiversity, pixelDiversity } from "./diversity.ts";
import type { FeatureSet } from "./linalg.ts";
import { promptAccuracy } from "./prompt-accuracy.ts";

/** Row-major n × dim float32 matrix. */
export interface FloatRows {
  dim: number;
  data: Float32Array;
}

export interface CellObservations {
  /** Prompt id of each sample, in sample order: the bootstrap's groups. */
  promptId: string[];
  /** Suite of each sample's prompt (null for free text), for per-suite accuracies. */
  suite?: (string | null)[];
  /** Evaluation features (FD, KID, precision/recall). */
  features?: FloatRows;
  /** 100·cos(image, prompt) per sample, evaluation CLIP. */
  clipScore?: number[];
  /** 100·cos per sample, guidance CLIP at t = 0. */
  clipScoreGuidance?: number[];
  /** Noised classifier's class probabilities at t = 0 (Inception score). */
  classProbs?: FloatRows;
  /** Oracle verdict per sample. */
  correct?: boolean[];
  /** Attributes each sample failed (oracle). */
  failed?: string[][];
  /**
   * Each gradient guide's own score per sample, by guide name (100·cos with the guide's towers for CLIPs,
   * log p(y | x, t = 0) for classifiers; NaN where a prompt has no class): what guidance raises, paired with the
   * oracle's verdicts to measure when it stops helping them (src/sweep/guides.ts writes them).
   */
  guideScores?: Record<string, number[]>;
  /** Per prompt id with ≥ 2 samples: within-prompt diversity (a group statistic, resampled as a whole). */
  diversityClip?: Record<string, number>;
  diversityPixel?: Record<string, number>;
}

/** Real images the distribution metrics compare against, and an independent second set for the noise floor. */
export interface ReferenceObservations {
  promptId: string[];
  features: FloatRows;
  /** A second real set of the same size and prompt mix: FD/KID between the two is the small-N floor. */
  floor?: { promptId: string[]; features: FloatRows };
}

export function flatten(set: FeatureSet): FloatRows {
  const dim = set[0]?.length ?? 0;
  const data = new Float32Array(set.length * dim);
  set.forEach((v, i) => {
    for (let j = 0; j < dim; j++) data[i * dim + j] = v[j]!;
  });
  return { dim, data };
}

export function rows(f: FloatRows): Float32Array[] {
  const n = f.dim ? f.data.length / f.dim : 0;
  return Array.from({ length: n }, (_, i) => f.data.subarray(i * f.dim, (i + 1) * f.dim));
}

/** The subset of a metric context and input that observing needs (see computeMetrics). */
export interface ObserveArgs {
  names: readonly string[];
  images: readonly Float32Array[];
  size: number;
  prompts: readonly { id: string; text: string; suite?: string; spec?: unknown }[];
  features?: () => FeatureSet;
  evalTexts?: () => { images: FeatureSet; texts: FeatureSet };
  guidanceTexts?: () => { images: FeatureSet; texts: FeatureSet };
  classProbs?: () => FeatureSet;
}

const DISTRIBUTION = new Set(["fd", "kid", "precision_recall"]);

export function observe(a: ObserveArgs): CellObservations {
  const ids = a.prompts.map((p) => p.id);
  const out: CellObservations = { promptId: ids, suite: a.prompts.map((p) => p.suite ?? null) };
  const has = (n: string) => a.names.includes(n);
  if (a.names.some((n) => DISTRIBUTION.has(n)) && a.features) out.features = flatten(a.features());
  if (has("clip_score") && a.evalTexts) {
    const e = a.evalTexts();
    out.clipScore = clipScore(e.images, e.texts).perImage;
  }
  if (has("clip_score_guidance") && a.guidanceTexts) {
    const e = a.guidanceTexts();
    out.clipScoreGuidance = clipScore(e.images, e.texts).perImage;
  }
  if (has("inception_score") && a.classProbs) out.classProbs = flatten(a.classProbs());
  if (has("prompt_accuracy")) {
    const r = promptAccuracy(
      a.images,
      a.prompts.map((p) => ({ id: p.id, spec: p.spec as never, ...(p.suite ? { suite: p.suite } : {}) })),
      { size: a.size },
    );
    out.correct = r.perImage.map((x) => x.correct);
    out.failed = r.perImage.map((x) => [...x.failed]);
  }
  if (has("diversity") && a.evalTexts) {
    out.diversityClip = Object.fromEntries(embeddingDiversity(a.evalTexts().images, ids).perGroup);
  }
  if (has("pixel_diversity")) out.diversityPixel = Object.fromEntries(pixelDiversity(a.images, ids).perGroup);
  return out;
}
