// `guidance-lab models evaluate`: the figures a zoo model's card records, recomputed from the shipped weights on
// renders no training step drew (their own seed stream). Each task gets the test that says whether the model can do
// the one job guidance or evaluation asks of it:
//   eval-clip    zero-shot caption retrieval on clean renders (the CLIP score trusts exactly this);
//   classifier   top-1 accuracy on q_sample-noised renders as t rises (classifier guidance follows ∇log p(y|x_t));
//   noised-clip  caption retrieval on noised renders as t rises (CLIP guidance follows its similarity at x_t);
//   denoiser     oracle prompt accuracy of classifier-free-guided samples (s = 3) against s = 1, the same for the
//                early checkpoint (autoguidance's weaker model), and the Fréchet distance of unconditional samples
//                to renders of the training distribution in evaluation-CLIP features.
import { createDiffusion } from "../core/diffusion.ts";
import { type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../core/engine.ts";
import { seededNoise } from "../core/samplers.ts";
import { suite } from "../data/suites.ts";
import {
  CLASS_NAMES,
  classIndex,
  type HeldOutMode,
  NUM_CLASSES,
  PAD_ID,
  render,
  sampleScene,
  tokenize,
} from "../data/world.ts";
import { evalClipEmbedder } from "../metrics/embedders.ts";
import { frechetDistance } from "../metrics/frechet.ts";
import { mcnemarExact, promptAccuracy, wilsonInterval } from "../metrics/prompt-accuracy.ts";
import type { NoisedClipModel } from "../nets/clip.ts";
import type { EncoderUNet } from "../nets/encoder-unet.ts";
import type { EvalClip } from "../nets/eval-clip.ts";
import type { Runtime } from "../onnx/choice.ts";
import { sampleBatches, samplerDiffusion } from "../pipelines/sampling.ts";
import { buildStrategy } from "../strategies/registry.ts";
import { textLengths } from "../train/tasks.ts";
import { hashSeed, Rng } from "../util/rng.ts";
import { loadZooModel, type ModelInfo, modelInfo, modelsDir } from "./registry.ts";
import { loadZoo } from "./zoo.ts";

/** Noise levels of the accuracy-versus-t curves (1000-step schedule). */
export const T_GRID = [0, 25, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999] as const;

export interface EvaluateOptions {
  dir?: string;
  /** Clean renders for the retrieval and classification figures (the issue's 1,000 by default). */
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

interface LabelledRenders {
  images: Float32Array[];
  labels: number[];
}

/** Single-object renders with their colour-shape class; `heldOut` chooses seen pairs or the held-out ones. */
export function labelledRenders(
  n: number,
  size: number,
  heldOut: HeldOutMode,
  stream: string,
): LabelledRenders {
  const rng = new Rng(hashSeed("models-evaluate", stream, heldOut));
  const images: Float32Array[] = [];
  const labels: number[] = [];
  for (let i = 0; i < n; i++) {
    const scene = sampleScene(rng, { numObjects: 1, heldOut });
    const o = scene.objects[0]!;
    images.push(render(scene, size));
    labels.push(classIndex(o.colour, o.shape));
  }
  return { images, labels };
}

/** Scores [B, 24] for NHWC [-1, 1] images at timesteps t; the argmax is the model's class. */
type ClassScores = (x: Tensor4D, t: Tensor1D) => Tensor2D;

/**
 * Top-1 accuracy of `scores` on the renders after q_sample to the given timesteps (x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε,
 * Ho et al. 2020 eq. 4), with seeded ε so every model is judged on the same noisy images.
 */
export function noisedAccuracy(
  scores: ClassScores,
  data: LabelledRenders,
  size: number,
  timesteps: (i: number) => number,
  schedule: { schedule: string; steps: number },
  batchSize: number,
  stream: string,
): number {
  const diffusion = createDiffusion({ schedule: schedule.schedule as "linear", steps: schedule.steps });
  const px = size * size * 3;
  let correct = 0;
  for (let from = 0; from < data.images.length; from += batchSize) {
    const b = Math.min(batchSize, data.images.length - from);
    const buf = new Float32Array(b * px);
    const ts = new Int32Array(b);
    for (let i = 0; i < b; i++) {
      const img = data.images[from + i]!;
      for (let k = 0; k < px; k++) buf[i * px + k] = img[k]! * 2 - 1;
      ts[i] = Math.min(schedule.steps - 1, timesteps(from + i));
    }
    const pred = tf.tidy(() => {
      const x0 = tf.tensor4d(buf, [b, size, size, 3]);
      const t = tf.tensor1d(ts, "int32");
      const noise = seededNoise(hashSeed("models-evaluate", stream))(from, [b, size, size, 3]);
      const xt = diffusion.qSample(x0, Array.from(ts), noise);
      return tf.argMax(scores(xt, t), 1);
    });
    const arg = pred.dataSync();
    pred.dispose();
    for (let i = 0; i < b; i++) if (arg[i] === data.labels[from + i]) correct++;
  }
  return correct / data.images.length;
}

/** "a red circle", ... in class order: the zero-shot captions the CLIPs retrieve among. */
export const CLASS_CAPTIONS: readonly string[] = CLASS_NAMES.map((n) => `a ${n}`);

function clipScores(textEmb: Tensor2D, image: (x: Tensor4D, t: Tensor1D) => Tensor2D): ClassScores {
  return (x, t) => tf.matMul(image(x, t), textEmb, false, true);
}

function worldTokens(texts: readonly string[], ctx: number): { ids: Int32Array; tokens: Tensor2D } {
  const ids = new Int32Array(texts.length * ctx);
  texts.forEach((s, i) => {
    ids.set(tokenize(s, ctx), i * ctx);
  });
  return { ids, tokens: tf.tensor2d(ids, [texts.length, ctx], "int32") as Tensor2D };
}

function percent(x: number): string {
  return `${(100 * x).toFixed(1)}%`;
}

interface ClassifierLike {
  scores: ClassScores;
  dispose(): void;
}

function classifierLike(name: string, dir: string): { info: ModelInfo; judge: ClassifierLike } {
  const { info, model } = loadZooModel(name, dir);
  switch (info.task) {
    case "classifier": {
      const c = model as EncoderUNet;
      return { info, judge: { scores: (x, t) => c.logits(x, t), dispose: () => c.dispose() } };
    }
    case "noised-clip": {
      const c = model as NoisedClipModel;
      const ctx = c.config.maxTextLen;
      const { ids, tokens } = worldTokens(CLASS_CAPTIONS, ctx);
      const text = c.embedText(tokens, textLengths(ids, ctx));
      tokens.dispose();
      return {
        info,
        judge: {
          scores: clipScores(text, (x, t) => c.embedImage(x, t)),
          dispose: () => {
            text.dispose();
            c.dispose();
          },
        },
      };
    }
    case "eval-clip": {
      const c = model as EvalClip;
      const ctx = c.config.text.ctx;
      const { ids, tokens } = worldTokens(CLASS_CAPTIONS, ctx);
      const mask = tf.tensor2d(
        Float32Array.from(ids, (id) => (id === PAD_ID ? 0 : 1)),
        tokens.shape,
      );
      const text = c.embedText(tokens, mask);
      tf.dispose([tokens, mask]);
      return {
        info,
        judge: {
          scores: clipScores(text, (x) => c.embedImage(x)),
          dispose: () => {
            text.dispose();
            c.dispose();
          },
        },
      };
    }
    default:
      throw new Error(`model '${name}' is a ${info.task}, not a classifier or CLIP`);
  }
}

function evaluateJudge(
  name: string,
  o: Required<Pick<EvaluateOptions, "dir" | "renders" | "curveRenders" | "batchSize">>,
  log: (s: string) => void,
): Omit<Evaluation, "seconds"> {
  const { info, judge } = classifierLike(name, o.dir);
  const size = info.config.world.size;
  const schedule = info.config.diffusion;
  try {
    const seen = labelledRenders(o.renders, size, "exclude", "seen");
    const held = labelledRenders(Math.max(1, Math.round(o.renders / 5)), size, "only", "held-out");
    const at = (data: LabelledRenders, t: (i: number) => number, stream: string) =>
      noisedAccuracy(judge.scores, data, size, t, schedule, o.batchSize, stream);
    const figures: Figure[] = [];
    const clean = at(seen, () => 0, "clean");
    const heldClean = at(held, () => 0, "clean-held");
    const what =
      info.task === "classifier"
        ? "top-1 accuracy over the 24 colour-shape classes"
        : "top-1 retrieval among the 24 colour-shape captions";
    figures.push({
      key: "clean",
      value: clean,
      description: `${what}, clean renders of seen pairs (n=${seen.images.length})`,
    });
    figures.push({
      key: "clean_held_out",
      value: heldClean,
      description: `the same on the held-out pairs, never in training (n=${held.images.length})`,
    });
    log(`[evaluate ${name}] clean ${percent(clean)}, held-out pairs ${percent(heldClean)}\n`);
    let curve: Evaluation["curve"];
    if (info.task !== "eval-clip") {
      // t ≤ 100 as guidance meets it late in sampling: t uniform over {0, ..., 100}, one draw per render.
      const rng = new Rng(hashSeed("models-evaluate", "t<=100"));
      const ts = seen.images.map(() => rng.int(101));
      const low = at(seen, (i) => ts[i]!, "t<=100");
      figures.push({
        key: "t_le_100",
        value: low,
        description: `${what}, t uniform in [0, 100] (n=${seen.images.length})`,
      });
      log(`[evaluate ${name}] t<=100 ${percent(low)}\n`);
      const sub: LabelledRenders = {
        images: seen.images.slice(0, o.curveRenders),
        labels: seen.labels.slice(0, o.curveRenders),
      };
      const acc = T_GRID.map((t) => at(sub, () => t, `curve-${t}`));
      curve = { t: [...T_GRID], accuracy: acc };
      log(`[evaluate ${name}] curve ${T_GRID.map((t, i) => `t=${t}:${percent(acc[i]!)}`).join(" ")}\n`);
    }
    return {
      name,
      task: info.task,
      step: info.step,
      figures,
      ...(curve ? { curve } : {}),
      settings: {
        renders: o.renders,
        curveRenders: o.curveRenders,
        classes: NUM_CLASSES,
        captions: "a <colour> <shape>",
      },
    };
  } finally {
    judge.dispose();
  }
}

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

async function evaluateDenoiser(
  name: string,
  o: Required<Omit<EvaluateOptions, "log" | "early">> & { early?: string },
  log: (s: string) => void,
): Promise<Omit<Evaluation, "seconds">> {
  const info = modelInfo(name, o.dir);
  const figures: Figure[] = [];
  const progress = (label: string, n: number) => (done: number) =>
    log(`[evaluate ${name}] ${label}: ${done}/${n} samples\n`);
  // The single-object suite names a shape only (GenEval's "single object"); the colour suite binds a colour too.
  const suites = [
    { name: "single_object" as const, per: o.samplesPerPrompt },
    { name: "colour" as const, per: Math.max(1, Math.round(o.samplesPerPrompt / 8)) },
  ];
  // Per-sample correctness by figure key: every setting samples from the same x_T and step noise, so settings
  // compare pairwise (McNemar) rather than through two unpaired intervals.
  const correctness = new Map<string, boolean[]>();
  const paired = (key: string, a: string, b: string, what: string) => {
    const pairs = (suite: string) => {
      const x = correctness.get(`${a}_${suite}`);
      const y = correctness.get(`${b}_${suite}`);
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
      figures.push({
        key: `${key}_${label}`,
        value: (gained - lost) / both.length,
        description: `${what}, ${label === "all" ? "both suites pooled" : `${label} suite`}, paired on the same x_T and step noise: ${gained} of ${both.length} samples right only with the first, ${lost} only with the second; exact McNemar two-sided p = ${p < 1e-4 ? p.toExponential(1) : p.toFixed(4)}`,
      });
      log(`[evaluate ${name}] ${key}_${label} ${gained} vs ${lost}, p = ${p.toPrecision(2)}\n`);
    }
  };
  const accuracyOf = async (modelName: string, scale: number, prefix: string, who: string) => {
    const zoo = loadZoo({ denoiser: modelName }, o.dir, o.runtime);
    try {
      for (const s of suites) {
        const distinct = suite(s.name);
        const prompts = distinct.flatMap((p) => Array.from({ length: s.per }, () => p));
        const key = `${prefix}_${s.name}`;
        const imgs = await sampleImages(
          zoo,
          { kind: "cfg", scale },
          prompts.map((p) => p.text),
          o.steps,
          o.batchSize,
          progress(key, prompts.length),
        );
        const scored = promptAccuracy(
          imgs,
          prompts.map((p) => ({ id: p.id, spec: p.spec, suite: p.suite })),
        );
        const acc = scored.accuracy;
        correctness.set(
          key,
          scored.perImage.map((r) => r.correct),
        );
        const [lo, hi] = wilsonInterval(Math.round(acc * prompts.length), prompts.length);
        const ci = `95% CI ${percent(lo)}–${percent(hi)}`;
        figures.push({
          key,
          value: acc,
          description: `${who}oracle prompt accuracy, ${s.name} suite (${distinct.length} prompts × ${s.per}), DDPM ${o.steps} steps, ${scale === 1 ? "conditional (s = 1)" : `classifier-free guidance s = ${scale}`}; ${ci}`,
        });
        log(`[evaluate ${name}] ${key} ${percent(acc)} (${ci})\n`);
      }
    } finally {
      zoo.dispose();
    }
  };
  await accuracyOf(name, 3, "cfg3", "");
  await accuracyOf(name, 1, "cfg1", "");
  paired(
    "cfg3_gain_over_cfg1",
    "cfg3",
    "cfg1",
    "accuracy gain of guidance s = 3 over the conditional model (s = 1)",
  );
  const early = o.early;
  if (early && modelInfoOrUndefined(early, o.dir)) {
    await accuracyOf(
      early,
      3,
      "early_cfg3",
      `the early checkpoint '${early}' (step ${modelInfo(early, o.dir).step}): `,
    );
    paired(
      "cfg3_gain_over_early",
      "cfg3",
      "early_cfg3",
      `accuracy gain over the early checkpoint '${early}' at s = 3`,
    );
  }
  if (modelInfoOrUndefined(o.evalClip, o.dir)) {
    const rng = new Rng(hashSeed("models-evaluate", "fd-real"));
    const real = Array.from({ length: o.fdSamples }, () =>
      render(sampleScene(rng, { twoObjectProb: info.config.world.twoObjects }), info.config.world.size),
    );
    const { model } = loadZooModel(o.evalClip, o.dir);
    try {
      const clip = model as EvalClip;
      const emb = evalClipEmbedder(clip, clip.config.text.ctx);
      const realFeatures = emb.images(real, info.config.world.size);
      // The same x_T and step noise for both models, so the early checkpoint's figure differs by the weights only.
      const fdOf = async (modelName: string, key: string, who: string) => {
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
            progress(key, o.fdSamples),
          );
        } finally {
          zoo.dispose();
        }
        const fd = frechetDistance(emb.images(fake, info.config.world.size), realFeatures);
        figures.push({
          key,
          value: fd,
          description: `${who}Fréchet distance of ${o.fdSamples} unconditional samples to ${o.fdSamples} renders of the training distribution, '${o.evalClip}' features`,
        });
        log(`[evaluate ${name}] ${key} ${fd.toFixed(4)}\n`);
      };
      await fdOf(name, "fd_unconditional", "");
      if (early && modelInfoOrUndefined(early, o.dir))
        await fdOf(early, "early_fd_unconditional", `the early checkpoint '${early}': `);
    } finally {
      model.dispose();
    }
  }
  return {
    name,
    task: "denoiser",
    step: info.step,
    figures,
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
