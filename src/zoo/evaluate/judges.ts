// The classifier's and the CLIPs' figures for `models evaluate` (index.ts): top-1 accuracy or caption retrieval on
// clean renders of seen and held-out colour-shape pairs, and, for the noised models, the same as t rises.
import { createDiffusion } from "../../core/diffusion.ts";
import { type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../../core/engine.ts";
import { seededNoise } from "../../core/samplers.ts";
import {
  CLASS_NAMES,
  classIndex,
  type HeldOutMode,
  NUM_CLASSES,
  PAD_ID,
  render,
  sampleScene,
  tokenize,
} from "../../data/world.ts";
import type { NoisedClipModel } from "../../nets/clip.ts";
import type { EncoderUNet } from "../../nets/encoder-unet.ts";
import type { EvalClip } from "../../nets/eval-clip.ts";
import { textLengths } from "../../train/tasks.ts";
import { hashSeed, Rng } from "../../util/rng.ts";
import { loadZooModel, type ModelInfo } from "../registry.ts";
import type { EvaluateOptions, Evaluation, Figure } from "./index.ts";

/** Noise levels of the accuracy-versus-t curves (1000-step schedule). */
export const T_GRID = [0, 25, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999] as const;

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

export function percent(x: number): string {
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

export function evaluateJudge(
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
