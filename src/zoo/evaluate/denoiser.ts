// The denoiser's figures for `models evaluate` (index.ts): oracle prompt accuracy of classifier-free-guided samples
// (s = 3) against s = 1 and against the early checkpoint, paired on the same noise (McNemar), and the Fréchet
// distance of unconditional samples to renders in evaluation-CLIP features.
import { seededNoise } from "../../core/samplers.ts";
import { suite } from "../../data/suites.ts";
import { render, sampleScene } from "../../data/world.ts";
import { evalClipEmbedder } from "../../metrics/embedders.ts";
import { frechetDistance } from "../../metrics/frechet.ts";
import { mcnemarExact, promptAccuracy, wilsonInterval } from "../../metrics/prompt-accuracy.ts";
import type { EvalClip } from "../../nets/eval-clip.ts";
import { sampleBatches, samplerDiffusion } from "../../pipelines/sampling.ts";
import { buildStrategy } from "../../strategies/registry.ts";
import { hashSeed, Rng } from "../../util/rng.ts";
import { loadZooModel, type ModelInfo, modelInfo } from "../registry.ts";
import { loadZoo } from "../zoo.ts";
import type { EvaluateOptions, Evaluation, Figure } from "./index.ts";
import { percent } from "./judges.ts";

/** Samples of one strategy for the given prompts, as HWC [0, 1] images; the noise depends only on the index. */
async function sampleImages(
  zoo: ReturnType<typeof loadZoo>,
  strategy: unknown,
  prompts: readonly string[],
  steps: number,
  batchSize: number,
  onBatch: (done: number) => void,
): Promise<Float32Array[]> {
  const s = zoo.imageSize;
  const choice = { sampler: "ddpm", steps };
  const diffusion = samplerDiffusion(choice, zoo.diffusion("").numTimesteps, (r) => zoo.diffusion(r));
  const built = buildStrategy(strategy, { ...zoo.models, diffusion }, "models evaluate");
  const { images } = await sampleBatches(
    built,
    diffusion,
    {
      items: prompts,
      batchSize,
      prompt: (p) => p,
      xT: (batch, from) => seededNoise(hashSeed("models-evaluate", "xT"))(from, [batch.length, s, s, 3]),
      noise: (_batch, from) => seededNoise(hashSeed("models-evaluate", "steps", from)),
      onBatch,
    },
    choice,
  );
  return images;
}

type DenoiserOptions = Required<Omit<EvaluateOptions, "log" | "early">> & { early?: string };

/** One denoiser's evaluation in progress: the figures so far and each setting's per-sample correctness. */
interface Run {
  name: string;
  o: DenoiserOptions;
  log: (s: string) => void;
  figures: Figure[];
  /**
   * Per-sample correctness by figure key: every setting samples from the same x_T and step noise, so settings
   * compare pairwise (McNemar) rather than through two unpaired intervals.
   */
  correctness: Map<string, boolean[]>;
}

/** The single-object suite names a shape only (GenEval's "single object"); the colour suite binds a colour too. */
function suitesOf(o: DenoiserOptions) {
  return [
    { name: "single_object" as const, per: o.samplesPerPrompt },
    { name: "colour" as const, per: Math.max(1, Math.round(o.samplesPerPrompt / 8)) },
  ];
}

const progress = (run: Run, label: string, n: number) => (done: number) =>
  run.log(`[evaluate ${run.name}] ${label}: ${done}/${n} samples\n`);

/** Step 1: oracle prompt accuracy of `modelName`'s cfg samples at `scale` on each suite, with Wilson intervals. */
async function promptAccuracyFigures(
  run: Run,
  modelName: string,
  scale: number,
  prefix: string,
  who: string,
) {
  const { o } = run;
  const zoo = loadZoo({ denoiser: modelName }, o.dir, o.runtime);
  try {
    for (const s of suitesOf(o)) {
      const distinct = suite(s.name);
      const prompts = distinct.flatMap((p) => Array.from({ length: s.per }, () => p));
      const key = `${prefix}_${s.name}`;
      const imgs = await sampleImages(
        zoo,
        { kind: "cfg", scale },
        prompts.map((p) => p.text),
        o.steps,
        o.batchSize,
        progress(run, key, prompts.length),
      );
      const scored = promptAccuracy(
        imgs,
        prompts.map((p) => ({ id: p.id, spec: p.spec, suite: p.suite })),
      );
      const acc = scored.accuracy;
      run.correctness.set(
        key,
        scored.perImage.map((r) => r.correct),
      );
      const [lo, hi] = wilsonInterval(Math.round(acc * prompts.length), prompts.length);
      const ci = `95% CI ${percent(lo)}–${percent(hi)}`;
      run.figures.push({
        key,
        value: acc,
        description: `${who}oracle prompt accuracy, ${s.name} suite (${distinct.length} prompts × ${s.per}), DDPM ${o.steps} steps, ${scale === 1 ? "conditional (s = 1)" : `classifier-free guidance s = ${scale}`}; ${ci}`,
      });
      run.log(`[evaluate ${run.name}] ${key} ${percent(acc)} (${ci})\n`);
    }
  } finally {
    zoo.dispose();
  }
}

/** Step 2: settings `a` and `b` compared on the same samples (exact McNemar), per suite and pooled. */
function pairedFigures(run: Run, key: string, a: string, b: string, what: string) {
  const suites = suitesOf(run.o);
  const pairs = (suite: string) => {
    const x = run.correctness.get(`${a}_${suite}`);
    const y = run.correctness.get(`${b}_${suite}`);
    return x && y ? x.map((v, i) => [v, y[i]!] as const) : [];
  };
  // Each suite alone, then both pooled (every sample counts once: the pooled test has the most power).
  for (const [label, both] of [
    ...suites.map((s) => [s.name, pairs(s.name)] as const),
    ["all", suites.flatMap((s) => pairs(s.name))] as const,
  ]) {
    if (!both.length) continue;
    const gained = both.filter(([x, y]) => x && !y).length;
    const lost = both.filter(([x, y]) => !x && y).length;
    const p = mcnemarExact(gained, lost);
    run.figures.push({
      key: `${key}_${label}`,
      value: (gained - lost) / both.length,
      description: `${what}, ${label === "all" ? "both suites pooled" : `${label} suite`}, paired on the same x_T and step noise: ${gained} of ${both.length} samples right only with the first, ${lost} only with the second; exact McNemar two-sided p = ${p < 1e-4 ? p.toExponential(1) : p.toFixed(4)}`,
    });
    run.log(`[evaluate ${run.name}] ${key}_${label} ${gained} vs ${lost}, p = ${p.toPrecision(2)}\n`);
  }
}

/**
 * Step 3: the Fréchet distance of unconditional samples of each of `models` to renders of the training
 * distribution, in the evaluation CLIP's features. The same x_T and step noise for every model, so the early
 * checkpoint's figure differs by the weights only.
 */
async function frechetFigures(
  run: Run,
  info: ModelInfo,
  models: readonly { name: string; key: string; who: string }[],
) {
  const { o } = run;
  const rng = new Rng(hashSeed("models-evaluate", "fd-real"));
  const real = Array.from({ length: o.fdSamples }, () =>
    render(sampleScene(rng, { twoObjectProb: info.config.world.twoObjects }), info.config.world.size),
  );
  const { model } = loadZooModel(o.evalClip, o.dir);
  try {
    const clip = model as EvalClip;
    const emb = evalClipEmbedder(clip, clip.config.text.ctx);
    const realFeatures = emb.images(real, info.config.world.size);
    for (const { name: modelName, key, who } of models) {
      const zoo = loadZoo({ denoiser: modelName }, o.dir, o.runtime);
      let fake: Float32Array[];
      try {
        const empty = Array.from({ length: o.fdSamples }, () => "");
        fake = await sampleImages(
          zoo,
          { kind: "unconditional" },
          empty,
          o.steps,
          o.batchSize,
          progress(run, key, o.fdSamples),
        );
      } finally {
        zoo.dispose();
      }
      const fd = frechetDistance(emb.images(fake, info.config.world.size), realFeatures);
      run.figures.push({
        key,
        value: fd,
        description: `${who}Fréchet distance of ${o.fdSamples} unconditional samples to ${o.fdSamples} renders of the training distribution, '${o.evalClip}' features`,
      });
      run.log(`[evaluate ${run.name}] ${key} ${fd.toFixed(4)}\n`);
    }
  } finally {
    model.dispose();
  }
}

export async function evaluateDenoiser(
  name: string,
  o: DenoiserOptions,
  log: (s: string) => void,
): Promise<Omit<Evaluation, "seconds">> {
  const info = modelInfo(name, o.dir);
  const run: Run = { name, o, log, figures: [], correctness: new Map() };
  await promptAccuracyFigures(run, name, 3, "cfg3", "");
  await promptAccuracyFigures(run, name, 1, "cfg1", "");
  pairedFigures(
    run,
    "cfg3_gain_over_cfg1",
    "cfg3",
    "cfg1",
    "accuracy gain of guidance s = 3 over the conditional model (s = 1)",
  );
  const early = o.early && modelInfoOrUndefined(o.early, o.dir) ? o.early : undefined;
  if (early) {
    await promptAccuracyFigures(
      run,
      early,
      3,
      "early_cfg3",
      `the early checkpoint '${early}' (step ${modelInfo(early, o.dir).step}): `,
    );
    pairedFigures(
      run,
      "cfg3_gain_over_early",
      "cfg3",
      "early_cfg3",
      `accuracy gain over the early checkpoint '${early}' at s = 3`,
    );
  }
  if (modelInfoOrUndefined(o.evalClip, o.dir))
    await frechetFigures(run, info, [
      { name, key: "fd_unconditional", who: "" },
      ...(early
        ? [{ name: early, key: "early_fd_unconditional", who: `the early checkpoint '${early}': ` }]
        : []),
    ]);
  return {
    name,
    task: "denoiser",
    step: info.step,
    figures: run.figures,
    settings: {
      steps: o.steps,
      sampler: "ddpm",
      samplesPerPrompt: o.samplesPerPrompt,
      fdSamples: o.fdSamples,
      runtime: o.runtime,
    },
  };
}

function modelInfoOrUndefined(name: string, dir: string): ModelInfo | undefined {
  try {
    return modelInfo(name, dir);
  } catch {
    return undefined;
  }
}
