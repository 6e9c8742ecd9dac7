// Model kinds the zoo trains. Each validates its own `model` block of the recipe and defines the loss of a slice
// of a step's global batch (src/train/data.ts makes the examples).
import { z } from "zod";
import { createDiffusion } from "../core/diffusion.ts";
import { type Scalar, type Tensor, type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../core/engine.ts";
import { Init } from "../core/layers.ts";
import { END_ID, NUM_CLASSES, parseCaption, satisfies, sceneLabels, VOCAB_SIZE } from "../data/world.ts";
import { type ClipConfig, ClipModel, type ClipTextConfig, type NoisedClipModel } from "../nets/clip.ts";
import { ConvClip } from "../nets/conv-clip.ts";
import { EncoderUNet, type EncoderUNetConfig } from "../nets/encoder-unet.ts";
import { EvalClip } from "../nets/eval-clip.ts";
import { UNet, type UNetConfig } from "../nets/unet.ts";
import { worldBatch } from "./data.ts";
import { formatZodError, type Recipe } from "./recipe.ts";
import { defineTask, floats, ints, type StepInput, type StepInputs, type TaskInstance } from "./task.ts";

/** A positive integer key with its default. */
const posInt = (d: number) => z.number().int().positive().default(d);

/** The text encoder's keys (context length, transformer width, layers, heads) of the models that read captions. */
const textFields = { textCtx: posInt(16), xfWidth: posInt(64), xfLayers: posInt(2), xfHeads: posInt(4) };

/** The text encoder of a model with textFields, over the world's vocabulary. */
function textConfig(m: { textCtx: number; xfWidth: number; xfLayers: number; xfHeads: number }) {
  return {
    vocabSize: VOCAB_SIZE,
    ctx: m.textCtx,
    width: m.xfWidth,
    layers: m.xfLayers,
    heads: m.xfHeads,
    finalLn: true,
    padding: true,
  };
}

export const denoiserModelSchema = z
  .object({
    /**
     * What the UNet's first three output channels predict: "eps" (GLIDE, guided-diffusion) or "v" = √ᾱ·ε − √(1−ᾱ)·x0
     * (Salimans & Ho 2022). The zoo presents either as ε to the samplers and strategies (src/zoo/zoo.ts).
     */
    prediction: z.enum(["eps", "v"]).default("eps"),
    modelChannels: posInt(32),
    channelMult: z.array(z.number().positive()).nonempty().default([1, 2, 2]),
    numResBlocks: posInt(2),
    attentionResolutions: z.array(z.number().int().positive()).default([16, 8]),
    numHeadChannels: posInt(32),
    ...textFields,
  })
  .strict();
export type DenoiserModelConfig = z.infer<typeof denoiserModelSchema>;

function parseModel<T>(schema: z.ZodType<T>, recipe: Recipe): T {
  const r = schema.safeParse(recipe.model);
  if (!r.success) throw new Error(formatZodError(r.error, `recipe ${recipe.name}: model`));
  return r.data;
}

/** The zoo's text-conditional denoiser: a small Text2ImUNet (GLIDE's architecture) with learned-range variance. */
export function denoiserUNetConfig(m: DenoiserModelConfig, imageSize: number): UNetConfig {
  return {
    imageSize,
    inChannels: 3,
    modelChannels: m.modelChannels,
    outChannels: 6,
    numResBlocks: m.numResBlocks,
    attentionResolutions: m.attentionResolutions,
    channelMult: m.channelMult,
    numHeads: 1,
    numHeadChannels: m.numHeadChannels,
    numHeadsUpsample: -1,
    useScaleShiftNorm: true,
    resblockUpdown: true,
    useNewAttentionOrder: false,
    text: textConfig(m),
  };
}

/** The examples of one task's slice of a step (one stream per task name, so models never share batches). */
function taskBatch(
  recipe: Recipe,
  task: string,
  step: number,
  from: number,
  to: number,
  o: { ctx: number; twoObjectProb?: number; captionDropout: number; timesteps?: number },
) {
  return worldBatch({
    seed: recipe.seed,
    task,
    step: recipe.fixedBatch ? 0 : step,
    from,
    to,
    size: recipe.world.size,
    ctx: o.ctx,
    twoObjectProb: o.twoObjectProb ?? recipe.world.twoObjects,
    captionDropout: o.captionDropout,
    ...(o.timesteps ? { timesteps: o.timesteps } : {}),
  });
}

function denoiserTask(recipe: Recipe): TaskInstance {
  const m = parseModel(denoiserModelSchema, recipe);
  const size = recipe.world.size;
  const model = new UNet(new Init(recipe.seed), denoiserUNetConfig(m, size));
  const d = createDiffusion({
    schedule: recipe.diffusion.schedule,
    steps: recipe.diffusion.steps,
    modelVarType: "learned_range",
  });
  return defineTask(model, {
    inputs(step, from, to) {
      const b = to - from;
      const batch = taskBatch(recipe, "denoiser", step, from, to, {
        ctx: m.textCtx,
        captionDropout: recipe.captionDropout,
        timesteps: d.numTimesteps,
      });
      return {
        x0: floats(batch.images, [b, size, size, 3]),
        noise: floats(batch.noise, [b, size, size, 3]),
        t: ints(batch.t, [b]),
        tokens: ints(batch.tokens, [b, m.textCtx]),
        mask: floats(batch.mask, [b, m.textCtx]),
      };
    },
    lossOf(x) {
      const [x0, noise, t] = [x.x0 as Tensor4D, x.noise as Tensor4D, x.t as Tensor1D];
      const xt = d.qSample(x0, t, noise);
      const out = model.forward(xt, t, { tokens: x.tokens as Tensor2D, mask: x.mask as Tensor2D });
      const [pred, varValues] = tf.split(out, 2, 3) as [Tensor4D, Tensor4D];
      const losses = d.trainingLosses({ out: pred, kind: m.prediction, varValues }, x0, t, noise, {
        minSnrGamma: recipe.minSnrGamma,
      });
      return tf.mean(losses.loss) as Scalar;
    },
  });
}

const encoderSchema = z
  .object({
    modelChannels: posInt(32),
    channelMult: z.array(z.number().positive()).nonempty().default([1, 2, 2]),
    numResBlocks: posInt(1),
    attentionResolutions: z.array(z.number().int().positive()).default([8]),
    numHeadChannels: posInt(32),
  })
  .strict();

export const classifierModelSchema = encoderSchema;

/** guided-diffusion's noised classifier (EncoderUNetModel, attention pooling) over the world's colour-shape classes. */
export function classifierConfig(
  m: z.infer<typeof encoderSchema>,
  imageSize: number,
  outChannels: number,
): EncoderUNetConfig {
  return {
    imageSize,
    inChannels: 3,
    modelChannels: m.modelChannels,
    outChannels,
    numResBlocks: m.numResBlocks,
    attentionResolutions: m.attentionResolutions,
    channelMult: m.channelMult,
    numHeads: 1,
    numHeadChannels: m.numHeadChannels,
    useScaleShiftNorm: true,
    resblockUpdown: true,
    useNewAttentionOrder: false,
    pool: "attention",
  };
}

function classifierTask(recipe: Recipe): TaskInstance {
  const m = parseModel(classifierModelSchema, recipe);
  const size = recipe.world.size;
  const model = new EncoderUNet(new Init(recipe.seed), classifierConfig(m, size, NUM_CLASSES));
  const d = createDiffusion({ schedule: recipe.diffusion.schedule, steps: recipe.diffusion.steps });
  return defineTask(model, {
    inputs(step, from, to) {
      const b = to - from;
      const batch = taskBatch(recipe, "classifier", step, from, to, {
        ctx: 1,
        twoObjectProb: 0,
        captionDropout: 1,
        timesteps: d.numTimesteps,
      });
      return {
        ...noisedInputs(batch, b, size),
        labels: ints(
          Int32Array.from(batch.scenes, (sc) => sceneLabels(sc)[0]!),
          [b],
        ),
      };
    },
    lossOf(x) {
      const t = x.t as Tensor1D;
      const logits = model.logits(d.qSample(x.x0 as Tensor4D, t, x.noise as Tensor4D), t);
      const onehot = tf.oneHot(x.labels as Tensor1D, NUM_CLASSES);
      return tf.neg(tf.mean(tf.sum(tf.mul(tf.logSoftmax(logits), onehot), 1))) as Scalar;
    },
  });
}

/** Clean images, noise and timesteps of a batch: the inputs of x_t = q_sample(x_0, t, noise) (NHWC). */
function noisedInputs(batch: ReturnType<typeof taskBatch>, b: number, size: number): StepInputs {
  return {
    x0: floats(batch.images, [b, size, size, 3]),
    noise: floats(batch.noise, [b, size, size, 3]),
    t: ints(batch.t, [b]),
  };
}

/**
 * Contrastive loss with every true match as a positive: captions are partial ("a circle"), so several images of a
 * batch can satisfy one caption; the world knows exactly which (CLIP's InfoNCE with multi-positive targets).
 */
function contrastiveLoss(zi: Tensor2D, zt: Tensor2D, logScale: Tensor, m: Tensor2D): Scalar {
  const logits = tf.mul(tf.matMul(zi, zt, false, true), tf.exp(tf.reshape(logScale, [])));
  const rowTargets = tf.div(m, tf.sum(m, 1, true));
  const colTargets = tf.div(m, tf.sum(m, 0, true));
  const i2t = tf.neg(tf.mean(tf.sum(tf.mul(tf.logSoftmax(logits, 1), rowTargets), 1)));
  const t2i = tf.neg(
    tf.mean(tf.sum(tf.mul(tf.logSoftmax(tf.transpose(logits)), tf.transpose(colTargets)), 1)),
  );
  return tf.div(tf.add(i2t, t2i), 2) as Scalar;
}

function matchMatrix(batch: ReturnType<typeof worldBatch>): StepInput {
  const b = batch.scenes.length;
  const specs = batch.captions.map((c) => parseCaption(c));
  const match = new Float32Array(b * b);
  for (let i = 0; i < b; i++) {
    for (let j = 0; j < b; j++) {
      const spec = specs[j];
      match[i * b + j] = i === j || (spec !== undefined && satisfies(batch.scenes[i]!, spec)) ? 1 : 0;
    }
  }
  return floats(match, [b, b]);
}

/** The noised CLIP's text tower and embedding width (both towers). */
const clipTextFields = {
  textCtx: posInt(16),
  embedDim: posInt(64),
  headState: posInt(32),
  heads: posInt(2),
  textBlocks: posInt(2),
};

const vitClipSchema = z
  .object({
    tower: z.literal("vit"),
    patchSize: posInt(4),
    imageBlocks: posInt(3),
    /** Widths of 3×3 convolutions before the patch projection (ClipConfig.convStem); [] is GLIDE's design. */
    convStem: z.array(z.number().int().positive()).default([]),
    ...clipTextFields,
  })
  .strict();

const convClipSchema = encoderSchema.extend({ tower: z.literal("conv"), ...clipTextFields }).strict();

/**
 * The noised CLIP's image tower: "vit", GLIDE's design (the default, and what exports without the key hold), or
 * "conv", the noised classifier's EncoderUNet (src/nets/conv-clip.ts).
 */
export const noisedClipModelSchema = z.preprocess(
  (v) => (v && typeof v === "object" && !Array.isArray(v) && !("tower" in v) ? { ...v, tower: "vit" } : v),
  z.discriminatedUnion("tower", [vitClipSchema, convClipSchema]),
);
export type NoisedClipModelConfig = z.infer<typeof noisedClipModelSchema>;

/** GLIDE's noised CLIP (ViT on (x_t, t) with a timestep token) at the world's size and vocabulary. */
export function noisedClipConfig(
  m: z.infer<typeof vitClipSchema>,
  imageSize: number,
  steps: number,
): ClipConfig {
  return {
    imageSize,
    patchSize: m.patchSize,
    ...clipTextConfig(m),
    nHeadStateImage: m.headState,
    nHeadImage: m.heads,
    nXfBlocksImage: m.imageBlocks,
    nTimesteps: steps,
    ...(m.convStem.length ? { convStem: m.convStem } : {}),
  };
}

function clipTextConfig(m: NoisedClipModelConfig): ClipTextConfig {
  return {
    nVocab: VOCAB_SIZE,
    maxTextLen: m.textCtx,
    nEmbd: m.embedDim,
    nHeadStateText: m.headState,
    nHeadText: m.heads,
    nXfBlocksText: m.textBlocks,
    logitScale: 1 / 0.07,
  };
}

/** The zoo's noised CLIP of either image tower. */
export function buildNoisedClip(
  m: NoisedClipModelConfig,
  imageSize: number,
  steps: number,
  init: Init,
): NoisedClipModel {
  if (m.tower === "vit") return new ClipModel(init, noisedClipConfig(m, imageSize, steps));
  const { outChannels: _, ...image } = classifierConfig(m, imageSize, m.embedDim);
  return new ConvClip(init, { ...clipTextConfig(m), image });
}

/** CLIP's text length: up to and including the end token (the text feature is read there). */
export function textLengths(tokens: Int32Array, ctx: number): number[] {
  const lens: number[] = [];
  for (let i = 0; i < tokens.length / ctx; i++) {
    let n = ctx;
    for (let k = 0; k < ctx; k++) {
      if (tokens[i * ctx + k] === END_ID) {
        n = k + 1;
        break;
      }
    }
    lens.push(n);
  }
  return lens;
}

function noisedClipTask(recipe: Recipe): TaskInstance {
  const m = parseModel(noisedClipModelSchema, recipe);
  const size = recipe.world.size;
  const model = buildNoisedClip(m, size, recipe.diffusion.steps, new Init(recipe.seed));
  const d = createDiffusion({ schedule: recipe.diffusion.schedule, steps: recipe.diffusion.steps });
  return defineTask(model, {
    inputs(step, from, to) {
      const b = to - from;
      const batch = taskBatch(recipe, "noised-clip", step, from, to, {
        ctx: m.textCtx,
        captionDropout: 0,
        timesteps: d.numTimesteps,
      });
      return {
        ...noisedInputs(batch, b, size),
        tokens: ints(batch.tokens, [b, m.textCtx]),
        lengths: ints(Int32Array.from(textLengths(batch.tokens, m.textCtx)), [b]),
        match: matchMatrix(batch),
      };
    },
    lossOf(x) {
      const t = x.t as Tensor1D;
      const zi = model.embedImage(d.qSample(x.x0 as Tensor4D, t, x.noise as Tensor4D), t);
      const zt = model.embedText(x.tokens as Tensor2D, x.lengths as Tensor1D);
      return contrastiveLoss(zi, zt, model.logitScale, x.match as Tensor2D);
    },
  });
}

export const evalClipModelSchema = encoderSchema
  .extend({
    embedDim: posInt(64),
    ...textFields,
  })
  .strict();

export function buildEvalClip(m: z.infer<typeof evalClipModelSchema>, size: number, init: Init): EvalClip {
  return new EvalClip(init, {
    image: classifierConfig(m, size, m.embedDim),
    text: textConfig(m),
    embedDim: m.embedDim,
  });
}

function evalClipTask(recipe: Recipe): TaskInstance {
  const m = parseModel(evalClipModelSchema, recipe);
  const size = recipe.world.size;
  const model = buildEvalClip(m, size, new Init(recipe.seed));
  return defineTask(model, {
    inputs(step, from, to) {
      const b = to - from;
      const batch = taskBatch(recipe, "eval-clip", step, from, to, { ctx: m.textCtx, captionDropout: 0 });
      return {
        x0: floats(batch.images, [b, size, size, 3]),
        tokens: ints(batch.tokens, [b, m.textCtx]),
        mask: floats(batch.mask, [b, m.textCtx]),
        match: matchMatrix(batch),
      };
    },
    lossOf(x) {
      const zi = model.embedImage(x.x0 as Tensor4D);
      const zt = model.embedText(x.tokens as Tensor2D, x.mask as Tensor2D);
      return contrastiveLoss(zi, zt, model.logitScale, x.match as Tensor2D);
    },
  });
}

const TASK_BUILDERS: Record<Recipe["task"], (r: Recipe) => TaskInstance> = {
  denoiser: denoiserTask,
  classifier: classifierTask,
  "noised-clip": noisedClipTask,
  "eval-clip": evalClipTask,
};

export function buildTask(recipe: Recipe): TaskInstance {
  return TASK_BUILDERS[recipe.task](recipe);
}
