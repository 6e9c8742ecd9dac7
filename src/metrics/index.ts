// The metric registry that sweep configs name (`metrics: [clip_score, fd, ...]`). Each entry declares the keys it
// writes into a cell record's `metrics` (these become results.csv columns) and what it needs from the context,
// so a config asking for a metric whose model is missing fails before any sampling, not after hours of it.
import { ATTRIBUTES } from "../data/oracle.ts";
import { SUITE_NAMES } from "../data/suites.ts";
import type { SceneSpec } from "../data/world.ts";
import { clipScore } from "./clip-score.ts";
import { aggregateCost, type CostSample } from "./cost.ts";
import { embeddingDiversity, pixelDiversity } from "./diversity.ts";
import type { ClassProbabilities, Embedder } from "./embedders.ts";
import { frechetDistance } from "./frechet.ts";
import { inceptionScore } from "./inception-score.ts";
import { kernelInceptionDistance, stratifiedKid } from "./kid.ts";
import type { FeatureSet } from "./linalg.ts";
import { type CellObservations, observe } from "./observations.ts";
import { precisionRecall } from "./precision-recall.ts";
import { promptAccuracy } from "./prompt-accuracy.ts";

export { clipScore } from "./clip-score.ts";
export { aggregateCost, type Cost, type CostSample } from "./cost.ts";
export { embeddingDiversity, pixelDiversity } from "./diversity.ts";
export {
  type ClassProbabilities,
  classifierProbabilities,
  type Embedder,
  evalClipEmbedder,
  guidanceClipEmbedder,
  openaiClipEmbedder,
} from "./embedders.ts";
export { frechetDistance, frechetFromStats, gaussianStats } from "./frechet.ts";
export { inceptionScore, softmaxRows } from "./inception-score.ts";
export { kernelInceptionDistance } from "./kid.ts";
export { type FeatureSet, rowsOf, type Vector } from "./linalg.ts";
export type { CellObservations, FloatRows, ReferenceObservations } from "./observations.ts";
export { precisionRecall } from "./precision-recall.ts";
export { promptAccuracy } from "./prompt-accuracy.ts";

/** The prompt an image was sampled for; images sharing `id` are samples of one prompt. */
export interface MetricPrompt {
  id: string;
  text: string;
  suite?: string;
  /** The world's constraints, for the oracle; absent for free-text prompts (GLIDE weights). */
  spec?: SceneSpec;
}

/** What one sweep cell produced. */
export interface MetricInput {
  /** HWC RGB in [0, 1], each `size` x `size`. */
  images: readonly Float32Array[];
  size: number;
  /** One per image. */
  prompts: readonly MetricPrompt[];
  /** Measured sampling batches of the cell. */
  cost?: readonly CostSample[];
}

/** Models and reference data the metrics may use; each metric names the fields it requires. */
export interface MetricContext {
  /** The evaluation CLIP (never used for guidance). */
  evalEmbedder?: Embedder;
  /** The guidance CLIP at t = 0, to expose CLIP guidance optimising its own judge. */
  guidanceEmbedder?: Embedder;
  /** The noised classifier at t = 0. */
  classProbabilities?: ClassProbabilities;
  /** Feature extractor for the Fréchet distance and precision/recall; default: the evaluation CLIP's images. */
  features?: (images: readonly Float32Array[], size: number) => FeatureSet;
  /** Features of real images in the same space as `features`, with each row's prompt id (the bootstrap's groups). */
  reference?: { features: FeatureSet; promptId?: string[] };
  /** What the features are, for axis labels and the CSV's metadata (e.g. "eval-CLIP 64-d"). */
  featureSpace?: string;
  /** Neighbours for precision/recall (default 3). */
  k?: number;
}

export interface MetricOutput {
  key: string;
  description: string;
  /** Direction of "better", for report annotations; absent where neither is (cost aside, diversity). */
  better?: "higher" | "lower";
}

export interface MetricResult {
  values: Record<string, number>;
  /** Values per prompt id, for the record's `perPrompt`. */
  perPrompt?: Map<string, Record<string, number>>;
}

export interface Metric {
  name: string;
  summary: string;
  outputs: readonly MetricOutput[];
  /** Context fields that must be present; `features` is also satisfied by `evalEmbedder`. */
  requires: readonly (keyof MetricContext)[];
  compute(input: MetricInput, ctx: MetricContext): MetricResult;
}

function featuresOf(input: MetricInput, ctx: MetricContext): FeatureSet {
  if (ctx.features) return ctx.features(input.images, input.size);
  if (ctx.evalEmbedder) return ctx.evalEmbedder.images(input.images, input.size);
  throw new Error("metrics: no feature extractor (give `features` or `evalEmbedder`)");
}

function meanBy(ids: readonly string[], values: readonly number[]): Map<string, number> {
  const acc = new Map<string, { s: number; n: number }>();
  ids.forEach((id, i) => {
    const a = acc.get(id) ?? { s: 0, n: 0 };
    a.s += values[i]!;
    a.n++;
    acc.set(id, a);
  });
  return new Map([...acc].map(([k, a]) => [k, a.s / a.n]));
}

function perPromptOf(key: string, m: Map<string, number>): Map<string, Record<string, number>> {
  return new Map([...m].map(([id, v]) => [id, { [key]: v }]));
}

function clipScoreMetric(name: string, which: "evalEmbedder" | "guidanceEmbedder", what: string): Metric {
  return {
    name,
    summary: `GLIDE's CLIP score 100·cos(z_image, z_text) by the ${what}, and torchmetrics' CLIPScore max(mean, 0)`,
    outputs: [
      { key: name, description: `mean 100·cos(image, prompt), ${what}`, better: "higher" },
      {
        key: `${name}_torchmetrics`,
        description: `torchmetrics' CLIPScore: max(mean 100·cos, 0), ${what}`,
        better: "higher",
      },
    ],
    requires: [which],
    compute(input, ctx) {
      const e = ctx[which]!;
      const r = clipScore(e.images(input.images, input.size), e.texts(input.prompts.map((p) => p.text)));
      const ids = input.prompts.map((p) => p.id);
      return {
        values: { [name]: r.score, [`${name}_torchmetrics`]: r.torchmetrics },
        perPrompt: perPromptOf(name, meanBy(ids, r.perImage)),
      };
    },
  };
}

export const METRICS: Readonly<Record<string, Metric>> = {
  clip_score: clipScoreMetric("clip_score", "evalEmbedder", "evaluation CLIP"),
  clip_score_guidance: clipScoreMetric("clip_score_guidance", "guidanceEmbedder", "guidance CLIP at t=0"),
  fd: {
    name: "fd",
    summary: "Fréchet distance of generated to reference features (FID when the features are Inception's)",
    outputs: [{ key: "fd", description: "Fréchet distance to the reference features", better: "lower" }],
    requires: ["reference", "features"],
    compute: (input, ctx) => ({
      values: { fd: frechetDistance(featuresOf(input, ctx), ctx.reference!.features) },
    }),
  },
  kid: {
    name: "kid",
    summary:
      "kernel inception distance: unbiased MMD² with the cubic polynomial kernel (Bińkowski et al. 2018)",
    outputs: [
      {
        key: "kid",
        description:
          "unbiased MMD² to the reference features, cubic kernel (prompt-stratified when the reference has prompt ids)",
        better: "lower",
      },
      {
        key: "kid_std",
        description:
          "std of KID over 100 subsets of min(1000, N) (torchmetrics); empty when each subset is the whole set",
      },
    ],
    requires: ["reference", "features"],
    compute(input, ctx) {
      const x = featuresOf(input, ctx);
      const y = ctx.reference!.features;
      const r = kernelInceptionDistance(x, y);
      // A sweep's sets hold n samples of each prompt: the prompt-stratified estimator is the unbiased one there.
      const gy = ctx.reference!.promptId;
      const value =
        gy && gy.length === y.length
          ? stratifiedKid(
              x,
              input.prompts.map((p) => p.id),
              y,
              gy,
            )
          : r.value;
      return { values: { kid: value, kid_std: r.std } };
    },
  },
  precision_recall: {
    name: "precision_recall",
    summary: "improved precision and recall (Kynkäänniemi et al. 2019), k nearest neighbours",
    outputs: [
      {
        key: "precision",
        description: "fraction of samples inside the real manifold (fidelity)",
        better: "higher",
      },
      {
        key: "recall",
        description: "fraction of real data inside the sample manifold (coverage)",
        better: "higher",
      },
    ],
    requires: ["reference", "features"],
    compute: (input, ctx) => ({
      values: { ...precisionRecall(ctx.reference!.features, featuresOf(input, ctx), ctx.k ?? 3) },
    }),
  },
  inception_score: {
    name: "inception_score",
    summary: "Inception score exp(E KL(p(y|x) ‖ p(y))) by the noised classifier at t=0",
    // No split std: its interval comes from the prompt bootstrap like every other metric's (src/stats).
    outputs: [{ key: "is", description: "Inception score (classifier at t=0)", better: "higher" }],
    requires: ["classProbabilities"],
    compute(input, ctx) {
      return { values: { is: inceptionScore(ctx.classProbabilities!(input.images, input.size)).score } };
    },
  },
  diversity: {
    name: "diversity",
    summary: "mean pairwise 1 − cos of evaluation-CLIP embeddings among one prompt's samples",
    outputs: [
      { key: "diversity_clip", description: "within-prompt mean pairwise 1 − cos (evaluation CLIP)" },
    ],
    requires: ["evalEmbedder"],
    compute(input, ctx) {
      const r = embeddingDiversity(
        ctx.evalEmbedder!.images(input.images, input.size),
        input.prompts.map((p) => p.id),
      );
      return { values: { diversity_clip: r.value }, perPrompt: perPromptOf("diversity_clip", r.perGroup) };
    },
  },
  pixel_diversity: {
    name: "pixel_diversity",
    summary: "mean pairwise pixel L2 / sqrt(dims) among one prompt's samples",
    outputs: [{ key: "diversity_pixel", description: "within-prompt mean pairwise RMS pixel difference" }],
    requires: [],
    compute(input) {
      const r = pixelDiversity(
        input.images,
        input.prompts.map((p) => p.id),
      );
      return { values: { diversity_pixel: r.value }, perPrompt: perPromptOf("diversity_pixel", r.perGroup) };
    },
  },
  prompt_accuracy: {
    name: "prompt_accuracy",
    summary: "oracle accuracy: overall, per attribute and per suite",
    outputs: [
      {
        key: "accuracy",
        description: "fraction of samples meeting every constraint (oracle)",
        better: "higher",
      },
      ...ATTRIBUTES.map(
        (a): MetricOutput => ({
          key: `accuracy_attr_${a}`,
          description: `fraction passing the ${a} constraints`,
          better: "higher",
        }),
      ),
      ...SUITE_NAMES.map(
        (s): MetricOutput => ({
          key: `accuracy_suite_${s}`,
          description: `accuracy on the ${s} suite (present when the cell has its prompts)`,
          better: "higher",
        }),
      ),
    ],
    requires: [],
    compute(input) {
      const prompts = input.prompts.map((p, i) => {
        if (!p.spec) throw new Error(`prompt_accuracy: prompt ${i} ('${p.text}') has no world spec`);
        return { id: p.id, spec: p.spec, suite: p.suite };
      });
      const r = promptAccuracy(input.images, prompts, { size: input.size });
      const values: Record<string, number> = { accuracy: r.accuracy };
      for (const a of ATTRIBUTES) values[`accuracy_attr_${a}`] = r.attributes[a];
      for (const [s, t] of Object.entries(r.suites)) values[`accuracy_suite_${s}`] = t.accuracy;
      return {
        values,
        perPrompt: new Map([...r.perPrompt].map(([id, t]) => [id, { accuracy: t.accuracy }])),
      };
    },
  },
  cost: {
    name: "cost",
    summary: "network evaluations and wall-clock seconds per image",
    outputs: [
      { key: "nfe", description: "network evaluations per image", better: "lower" },
      { key: "seconds_per_image", description: "sampling wall-clock seconds per image", better: "lower" },
    ],
    requires: [],
    compute(input) {
      if (!input.cost) throw new Error("cost: the cell has no measured batches");
      const c = aggregateCost(input.cost);
      return { values: { nfe: c.nfe, seconds_per_image: c.secondsPerImage } };
    },
  },
};

export const METRIC_NAMES = Object.keys(METRICS);

export function getMetric(name: string): Metric {
  const m = METRICS[name];
  if (!m) throw new Error(`unknown metric '${name}'; expected one of ${METRIC_NAMES.join(", ")}`);
  return m;
}

/** Names of context fields a metric needs but `ctx` lacks (empty when it can run). */
export function missingRequirements(metric: Metric, ctx: MetricContext): string[] {
  return metric.requires.filter((r) => {
    if (r === "features") return !ctx.features && !ctx.evalEmbedder;
    return ctx[r] === undefined;
  });
}

/** Throws naming every metric whose requirements `ctx` does not meet; call before sampling. */
export function checkMetrics(names: readonly string[], ctx: MetricContext): void {
  const problems = names.flatMap((n) => {
    const missing = missingRequirements(getMetric(n), ctx);
    return missing.length ? [`${n} needs ${missing.join(", ")}`] : [];
  });
  if (problems.length) throw new Error(`metrics cannot run: ${problems.join("; ")}`);
}

/** Output description by key, across the registry (for report and CSV documentation). */
export function describeMetricKey(key: string): MetricOutput | undefined {
  for (const m of Object.values(METRICS)) {
    const o = m.outputs.find((x) => x.key === key);
    if (o) return o;
  }
  return undefined;
}

export interface PerPromptEntry {
  promptId: string;
  text: string;
  suite?: string;
  n: number;
  metrics: Record<string, number>;
}

/**
 * Compute the named metrics of one cell. Embeddings and features are computed once per call and shared by the
 * metrics that use them (FD and precision/recall read the same features; CLIP score and diversity the same
 * image embeddings).
 */
export function computeMetrics(
  names: readonly string[],
  input: MetricInput,
  ctx: MetricContext,
): { metrics: Record<string, number>; perPrompt: PerPromptEntry[]; observations: CellObservations } {
  if (input.prompts.length !== input.images.length) {
    throw new Error(`metrics: ${input.images.length} images but ${input.prompts.length} prompts`);
  }
  checkMetrics(names, ctx);
  const shared = memoContext(ctx);
  const metrics: Record<string, number> = {};
  const byPrompt = new Map<string, PerPromptEntry>();
  input.prompts.forEach((p) => {
    const e = byPrompt.get(p.id);
    if (e) e.n++;
    else
      byPrompt.set(p.id, {
        promptId: p.id,
        text: p.text,
        ...(p.suite !== undefined ? { suite: p.suite } : {}),
        n: 1,
        metrics: {},
      });
  });
  for (const name of names) {
    const r = getMetric(name).compute(input, shared);
    Object.assign(metrics, r.values);
    for (const [id, vals] of r.perPrompt ?? []) {
      const e = byPrompt.get(id);
      if (e) Object.assign(e.metrics, vals);
    }
  }
  const texts = (e: Embedder | undefined) =>
    e
      ? () => ({
          images: e.images(input.images, input.size),
          texts: e.texts(input.prompts.map((p) => p.text)),
        })
      : undefined;
  const features = (shared.features ?? shared.evalEmbedder) ? () => featuresOf(input, shared) : undefined;
  const probs = shared.classProbabilities;
  const evalTexts = texts(shared.evalEmbedder);
  const guidanceTexts = texts(shared.guidanceEmbedder);
  const observations = observe({
    names,
    images: input.images,
    size: input.size,
    prompts: input.prompts,
    ...(features ? { features } : {}),
    ...(evalTexts ? { evalTexts } : {}),
    ...(guidanceTexts ? { guidanceTexts } : {}),
    ...(probs ? { classProbs: () => probs(input.images, input.size) } : {}),
  });
  return { metrics, perPrompt: [...byPrompt.values()], observations };
}

function cached<K, V>(map: { get(k: K): V | undefined; set(k: K, v: V): unknown }, key: K, make: () => V): V {
  const hit = map.get(key);
  if (hit !== undefined) return hit;
  const v = make();
  map.set(key, v);
  return v;
}

function memoEmbedder(e: Embedder | undefined): Embedder | undefined {
  if (!e) return undefined;
  const images = new WeakMap<readonly Float32Array[], FeatureSet>();
  const texts = new Map<string, FeatureSet>();
  return {
    images: (xs, size) => cached(images, xs, () => e.images(xs, size)),
    texts: (ts) => cached(texts, JSON.stringify(ts), () => e.texts(ts)),
  };
}

function memoImages<F extends (images: readonly Float32Array[], size: number) => FeatureSet>(
  f: F | undefined,
): F | undefined {
  if (!f) return undefined;
  const cache = new WeakMap<readonly Float32Array[], FeatureSet>();
  return ((xs: readonly Float32Array[], size: number) => cached(cache, xs, () => f(xs, size))) as F;
}

function memoContext(ctx: MetricContext): MetricContext {
  const evalEmbedder = memoEmbedder(ctx.evalEmbedder);
  const out: MetricContext = { ...ctx };
  if (evalEmbedder) out.evalEmbedder = evalEmbedder;
  const guidanceEmbedder = memoEmbedder(ctx.guidanceEmbedder);
  if (guidanceEmbedder) out.guidanceEmbedder = guidanceEmbedder;
  const probs = memoImages(ctx.classProbabilities);
  if (probs) out.classProbabilities = probs;
  const features = memoImages(ctx.features);
  if (features) out.features = features;
  return out;
}
