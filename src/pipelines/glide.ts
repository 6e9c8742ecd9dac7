// GLIDE's pipelines (Nichol et al. 2021, arXiv 2112.10741) on user-supplied models, through the strategies registry
// and the core samplers like every zoo run:
//   text2im      base model + any strategy (default classifier-free, s = 3), then optionally the upsampler with
//                "fast27" respacing and x_T·0.997, conditioned on the quantised base samples (text2im notebook);
//   clip-guided  the conditional base model + the noised CLIP's gradient (clip_guided notebook);
//   inpaint      the mask-conditioned model and known-region replacement (inpaint notebook), optionally upsampled
//                by the inpainting upsampler.
// Text comes from the GPT-2 tokenizer or from a function giving pre-tokenized ids.
import type { GaussianDiffusion } from "../core/diffusion.ts";
import type { Tensor2D, Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import type { ScheduleName } from "../core/samplers.ts";
import type { StepInfo } from "../core/types.ts";
import type { ClipModel } from "../nets/clip.ts";
import { GLIDE_DIFFUSION } from "../nets/configs.ts";
import type { Perturbation } from "../nets/perturb.ts";
import { ClipTokenizer, Gpt2Tokenizer } from "../nets/tokenizers.ts";
import type { Conditioning, UNet } from "../nets/unet.ts";
import type { Runtime } from "../onnx/choice.ts";
import { type DenoiserForward, denoiserOn } from "../onnx/runtime.ts";
import type { GuidanceModels } from "../strategies/strategy.ts";
import {
  diffusionFor,
  type KnownRegion,
  runStage,
  type SpatialInputs,
  spatialModel,
  stageTable,
} from "./sampling.ts";

/** The GPT-2 tokenizer, or prompt → BPE ids (no padding; "" always means no tokens, GLIDE's unconditional input). */
export type GlideText = Gpt2Tokenizer | ((prompt: string) => readonly number[]);
/** CLIP's tokenizer, or prompt → BPE ids without start/end tokens. */
export type ClipText = ClipTokenizer | ((prompt: string) => readonly number[]);

/** GLIDE's model inputs: ids truncated to the text context, padded with the last vocabulary id, mask on real tokens. */
export function glideEncoder(unet: UNet, text: GlideText): (prompts: readonly string[]) => Conditioning {
  const cfg = unet.config.text;
  if (!cfg) throw new Error("GLIDE pipeline: the model has no text encoder (config.text)");
  const ctx = cfg.ctx;
  const pad = cfg.vocabSize - 1;
  const ids = (p: string) => (p === "" ? [] : text instanceof Gpt2Tokenizer ? text.encode(p) : text(p));
  return (prompts) => {
    const tokens = new Int32Array(prompts.length * ctx).fill(pad);
    const mask = new Float32Array(prompts.length * ctx);
    for (const [i, p] of prompts.entries()) {
      const row = ids(p).slice(0, ctx);
      for (const [j, id] of row.entries()) {
        if (!Number.isInteger(id) || id < 0 || id >= cfg.vocabSize) {
          throw new Error(`GLIDE pipeline: prompt '${p}' has token id ${id} outside 0..${cfg.vocabSize - 1}`);
        }
        tokens[i * ctx + j] = id;
        mask[i * ctx + j] = 1;
      }
    }
    return {
      tokens: tf.tensor2d(tokens, [prompts.length, ctx], "int32"),
      mask: tf.tensor2d(mask, [prompts.length, ctx]),
    };
  };
}

/** Prompts → unit-norm noised-CLIP text embeddings ([SOT] + ids[:ctx−2] + [EOT], padded with 0). */
export function clipTextEmbedder(clip: ClipModel, text: ClipText): (prompts: readonly string[]) => Tensor2D {
  const ctx = clip.config.maxTextLen;
  const sot = clip.config.nVocab - 2;
  const eot = clip.config.nVocab - 1;
  const ids = (p: string) => (text instanceof ClipTokenizer ? text.encode(p) : text(p));
  return (prompts) =>
    tf.tidy(() => {
      const flat = new Int32Array(prompts.length * ctx);
      const lens = prompts.map((p, i) => {
        const row = [sot, ...ids(p).slice(0, ctx - 2), eot];
        flat.set(row, i * ctx);
        return row.length;
      });
      return clip.embedText(tf.tensor2d(flat, [prompts.length, ctx], "int32") as Tensor2D, lens);
    });
}

/** GLIDE's low_res input: samples quantised to 8 bits, ((x+1)·127.5).round()/127.5 − 1 (round half to even). */
export function quantize8(x: Tensor4D): Tensor4D {
  return tf.tidy(() => tf.sub(tf.div(tf.round(tf.mul(tf.add(x, 1), 127.5)), 127.5), 1) as Tensor4D);
}

type Stage = "base" | "upsampler";
export type GlideStepCallback = (stage: Stage, info: StepInfo & { total: number }) => void;

interface CommonOptions {
  prompts: readonly string[];
  text: GlideText;
  /**
   * Default "100" (the notebooks' base respacing); ignored when `diffusion` is given. σ-space samplers take as many
   * steps as it keeps, with their own σs (see sampling.ts stageTable).
   */
  respacing?: string;
  /** Overrides the base diffusion (default: GLIDE's squaredcos_cap_v2, 1000 steps, learned range). */
  diffusion?: GaussianDiffusion;
  /** A registry sampler (src/core/samplers/registry.ts); default "ddpm". */
  sampler?: string;
  /** σ-space samplers' schedule; default each sampler's own. */
  schedule?: ScheduleName;
  eta?: number;
  seed?: number | string;
  onStep?: GlideStepCallback;
  /** The upsampling stage; omitted: base samples only. */
  upsample?: UpsampleOptions;
  /**
   * Where the UNets' forwards run (resolved: see onnx/choice.ts resolveRuntime); default TensorFlow.js. The noised
   * CLIP of CLIP guidance is differentiated, so it stays on TensorFlow.js either way.
   */
  runtime?: Runtime;
}

/** Runs `fn` with `unets`' forwards on `runtime`, freeing their ONNX sessions whatever happens. */
function withForwards<T>(
  runtime: Runtime | undefined,
  unets: UNet[],
  fn: (models: DenoiserForward[]) => T,
): T {
  const fwds: DenoiserForward[] = [];
  try {
    for (const u of unets) fwds.push(denoiserOn(u, runtime));
    return fn(fwds);
  } finally {
    for (const f of fwds) f.dispose();
  }
}

/** A stage's model and its perturbed variants (PAG, SEG, skip-layer guidance), with the stage's spatial inputs. */
function stageModels(unet: UNet, spatial: SpatialInputs, f: DenoiserForward) {
  return {
    model: spatialModel(unet, spatial, f.model),
    perturbed: (p: Perturbation) => spatialModel(unet, spatial, f.perturbed(p)),
  };
}

export interface UpsampleOptions {
  model: UNet;
  /** Default: the base stage's text. */
  text?: GlideText;
  /** Default { kind: "none" }: the notebooks run the upsampler without guidance. */
  strategy?: unknown;
  /** Default "fast27". */
  respacing?: string;
  /** Default GLIDE's upsampler diffusion (linear, 1000 steps). */
  diffusion?: GaussianDiffusion;
  /** Initial noise scale, default 0.997 (upsample_temp). */
  temperature?: number;
  /** Inpainting upsampler: the known image and mask at the upsampler's resolution. */
  known?: KnownRegion;
}

export interface GlideText2ImOptions extends CommonOptions {
  base: UNet;
  /** Raw strategy config; default { kind: "cfg", scale: 3 }. */
  strategy?: unknown;
  /** Models some strategies need besides the base: the noised CLIP (clip), a weak model (autoguidance). */
  clip?: { model: ClipModel; text: ClipText };
  weak?: UNet;
}

export interface GlideResult {
  /** [B, s, s, 3] in [-1, 1]. */
  base: Tensor4D;
  upsampled?: Tensor4D;
  /** Network evaluations per sample of each stage. */
  nfe: { base: number; upsampler: number };
  dispose(): void;
}

/** A stage's table and steps: the given diffusion as it is, else the model's, respaced for the sampler. */
function stageDiffusion(
  o: CommonOptions,
  unet: UNet,
  table: { schedule: string; steps: number },
  respacing: string,
  given: GaussianDiffusion | undefined,
): { diffusion: GaussianDiffusion; steps: number } {
  if (given) return { diffusion: given, steps: given.numTimesteps };
  return stageTable(o.sampler, respacing, table.steps, (r) =>
    diffusionFor(unet, table.schedule, r, table.steps),
  );
}

function shapeOf(unet: UNet): [number, number, number] {
  const s = unet.config.imageSize;
  return [s, s, unet.config.inChannels];
}

function runUpsample(o: CommonOptions, baseSamples: Tensor4D): { sample: Tensor4D; nfe: number } {
  const up = o.upsample!;
  if (!up.model.config.superRes)
    throw new Error("GLIDE pipeline: upsample.model is not a super-resolution model");
  const lowRes = quantize8(baseSamples);
  const known = up.known;
  const masked = known ? (tf.mul(known.image, known.mask) as Tensor4D) : undefined;
  try {
    return withForwards(o.runtime, [up.model], ([forward]) => {
      const models: GuidanceModels = {
        ...stageModels(
          up.model,
          {
            lowRes,
            ...(known && masked ? { inpaintImage: masked, inpaintMask: known.mask } : {}),
          },
          forward!,
        ),
        encode: glideEncoder(up.model, up.text ?? o.text),
      };
      return runStage({
        models,
        strategy: up.strategy ?? { kind: "none" },
        prompts: o.prompts,
        ...stageDiffusion(o, up.model, GLIDE_DIFFUSION.upsampler, up.respacing ?? "fast27", up.diffusion),
        shape: shapeOf(up.model),
        seed: o.seed ?? 0,
        temperature: up.temperature ?? 0.997,
        ...stageOptions(o, "upsampler", known),
      });
    });
  } finally {
    tf.dispose([lowRes, ...(masked ? [masked] : [])]);
  }
}

function finish(o: CommonOptions, base: { sample: Tensor4D; nfe: number }): GlideResult {
  let up: { sample: Tensor4D; nfe: number } | undefined;
  try {
    if (o.upsample) up = runUpsample(o, base.sample);
  } catch (e) {
    base.sample.dispose();
    throw e;
  }
  return {
    base: base.sample,
    ...(up ? { upsampled: up.sample } : {}),
    nfe: { base: base.nfe, upsampler: up?.nfe ?? 0 },
    dispose: () => tf.dispose([base.sample, ...(up ? [up.sample] : [])]),
  };
}

/** What both stages take from the common options: stage name, known region, sampler, eta and step hook. */
function stageOptions(o: CommonOptions, stage: "base" | "upsampler", known?: KnownRegion) {
  return {
    stage,
    ...(known ? { known } : {}),
    ...(o.sampler ? { sampler: o.sampler } : {}),
    ...(o.schedule ? { schedule: o.schedule } : {}),
    ...(o.eta !== undefined ? { eta: o.eta } : {}),
    ...(o.onStep ? { onStep: (i: StepInfo & { total: number }) => o.onStep!(stage, i) } : {}),
  };
}

/** The base stage: `unet` (whose forward `models.model` wraps) under `strategy`, sampler and hooks from `o`. */
function runBase(
  o: CommonOptions,
  unet: UNet,
  models: GuidanceModels,
  strategy: unknown,
  known?: KnownRegion,
): { sample: Tensor4D; nfe: number } {
  return runStage({
    models,
    strategy,
    prompts: o.prompts,
    ...stageDiffusion(o, unet, GLIDE_DIFFUSION.base, o.respacing ?? "100", o.diffusion),
    shape: shapeOf(unet),
    seed: o.seed ?? 0,
    ...stageOptions(o, "base", known),
  });
}

/** Text to image: the base model under any registry strategy, then (optionally) the upsampler. */
export function glideText2Im(o: GlideText2ImOptions): GlideResult {
  const base = withForwards(o.runtime, o.weak ? [o.base, o.weak] : [o.base], ([forward, weak]) => {
    const models: GuidanceModels = {
      ...stageModels(o.base, {}, forward!),
      encode: glideEncoder(o.base, o.text),
      unconditionalPrompt: "",
    };
    if (o.clip) {
      models.clip = o.clip.model;
      models.clipText = clipTextEmbedder(o.clip.model, o.clip.text);
    }
    if (o.weak && weak) models.weak = spatialModel(o.weak, {}, weak.model);
    return runBase(o, o.base, models, o.strategy ?? { kind: "cfg", scale: 3 });
  });
  return finish(o, base);
}

/**
 * CLIP-guided GLIDE: the conditional base model plus s·∇ of the noised CLIP's similarity (the clip_guided notebook:
 * no classifier-free guidance, scale 3). `base` wraps another strategy, e.g. { kind: "cfg" }, to compose both.
 */
export function glideClipGuided(
  o: Omit<GlideText2ImOptions, "strategy" | "clip"> & {
    clip: { model: ClipModel; text: ClipText };
    scale?: number;
    baseStrategy?: { kind: string } & Record<string, unknown>;
  },
): GlideResult {
  const { scale, baseStrategy, ...rest } = o;
  return glideText2Im({
    ...rest,
    strategy: { kind: "clip", scale: scale ?? 3, base: baseStrategy ?? { kind: "none" } },
  });
}

export interface GlideInpaintOptions extends CommonOptions {
  /** An inpainting model (config.inpaint), or any GLIDE model for known-region replacement alone. */
  model: UNet;
  /** The image to edit [B or 1, s, s, 3] in [-1, 1] and its mask [B or 1, s, s, 1], 1 = keep. */
  image: Tensor4D;
  mask: Tensor4D;
  /** Default "x0" (the official notebook's denoised_fn). */
  mode?: KnownRegion["mode"];
  /** Raw strategy config; default { kind: "cfg", scale: 5 } (the inpaint notebook's guidance_scale). */
  strategy?: unknown;
}

/**
 * GLIDE inpainting: the model sees image·mask and mask as extra inputs (when it has them) and the known pixels are
 * forced at every step. Also iterative editing: pass a previous output as `image` with a new prompt and mask.
 */
export function glideInpaint(o: GlideInpaintOptions): GlideResult {
  const known: KnownRegion = { image: o.image, mask: o.mask, mode: o.mode ?? "x0" };
  const masked = tf.mul(o.image, o.mask) as Tensor4D;
  try {
    const base = withForwards(o.runtime, [o.model], ([forward]) => {
      const models: GuidanceModels = {
        ...stageModels(o.model, { inpaintImage: masked, inpaintMask: o.mask }, forward!),
        encode: glideEncoder(o.model, o.text),
        unconditionalPrompt: "",
      };
      return runBase(o, o.model, models, o.strategy ?? { kind: "cfg", scale: 5 }, known);
    });
    return finish(o, base);
  } finally {
    masked.dispose();
  }
}
