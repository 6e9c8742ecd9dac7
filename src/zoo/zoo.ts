// The embedded default's models as one GuidanceModels bag: the zoo denoiser (and its early checkpoint for
// autoguidance), the noised classifier and the noised CLIP, with the world's tokenizer and label map. Models missing
// from the models folder (GUIDANCE_LAB_MODELS pointing elsewhere, or a checkout without them) are simply absent, so
// a strategy that needs one fails with an error naming it.
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { createDiffusion, type GaussianDiffusion } from "../core/diffusion.ts";
import { type Tensor1D, type Tensor2D, tf } from "../core/engine.ts";
import type { Module } from "../core/layers.ts";
import { labelForPrompt, tokenize } from "../data/world.ts";
import type { NoisedClipModel } from "../nets/clip.ts";
import type { ModelFn } from "../nets/denoiser.ts";
import type { EncoderUNet } from "../nets/encoder-unet.ts";
import type { EvalClip } from "../nets/eval-clip.ts";
import type { Perturbation } from "../nets/perturb.ts";
import type { UNet } from "../nets/unet.ts";
import type { Runtime } from "../onnx/choice.ts";
import { differentiableDenoiser } from "../onnx/denoiser-vjp.ts";
import { OnnxGuideGrad, onnxCondGrad } from "../onnx/guide-grad.ts";
import { denoiserOn } from "../onnx/runtime.ts";
import { cleanClipLoss } from "../strategies/clean-clip.ts";
import type { CleanClip, GuidanceModels } from "../strategies/strategy.ts";
import { denoiserModelSchema, textLengths } from "../train/tasks.ts";
import { loadZooModel, type ModelInfo, modelsDir } from "./registry.ts";
import { SplitGuide } from "./split-guide.ts";
import { encodeWorld, epsFromV } from "./zoo-models.ts";

export { encodeWorld, epsFromV } from "./zoo-models.ts";

export interface ZooNames {
  denoiser: string;
  weak: string;
  classifier: string;
  clip: string;
  /** The clean-render CLIP that clean-clip guidance uses (never the evaluation CLIP). */
  cleanClip: string;
}

/**
 * The shipped zoo's model names by role: loadZoo's defaults, and (less cleanClip, plus the evaluation CLIP) the
 * sweep config's `models` defaults (src/sweep/config.ts).
 */
export const DEFAULT_ZOO = {
  denoiser: "denoiser",
  weak: "denoiser-early",
  classifier: "classifier",
  clip: "noised-clip",
  cleanClip: "clean-clip",
  /** The CLIP the metrics score with; never a guide. */
  evalClip: "eval-clip",
} as const satisfies ZooNames & { evalClip: string };

/** The guidance-bag keys a zoo model of each task provides as a guide (`{kind: clip, model: NAME}`). */
export const GUIDE_KEYS: Readonly<Record<string, readonly (keyof GuidanceModels)[]>> = {
  classifier: ["classifier"],
  "noised-clip": ["clip", "clipText"],
  "eval-clip": ["cleanClip", "cleanClipText"],
};

export interface ZooGuide {
  name: string;
  task: string;
  /** The loaded network (EncoderUNet, NoisedClipModel or EvalClip by task), for forward uses such as scoring. */
  module: Module;
  bag: Partial<GuidanceModels>;
}

export interface Zoo {
  models: GuidanceModels;
  info: ModelInfo;
  imageSize: number;
  /** The noised classifier and CLIP themselves, for their forwards (models.classifier and models.clip may be
   * gradient-only wrappers), when shipped. */
  noisedClassifier?: EncoderUNet;
  noisedClip?: NoisedClipModel;
  /** A diffusion over the denoiser's schedule, respaced as asked ("50", "ddim25", an explicit step set, ...). */
  diffusion(respacing: string | readonly number[]): GaussianDiffusion;
  /** A guide by zoo name (loaded once, owned by the zoo): its task, the loaded module and its bag keys. */
  guideModel(name: string): ZooGuide;
  dispose(): void;
}

const present = (name: string, dir: string) => existsSync(join(dir, name, "model.json"));

/**
 * Threads for the guidance gradients: 2 on the wasm backend when the machine has two cores (wasm computes on one
 * thread per process; see split-guide.ts), else 1; GUIDANCE_LAB_GUIDE_THREADS=1|2 overrides.
 */
export function defaultGuideThreads(): 1 | 2 {
  const env = process.env.GUIDANCE_LAB_GUIDE_THREADS;
  if (env !== undefined && env !== "") {
    if (env !== "1" && env !== "2") throw new Error(`GUIDANCE_LAB_GUIDE_THREADS=${env}: expected 1 or 2`);
    return env === "2" ? 2 : 1;
  }
  return tf.getBackend() === "wasm" && availableParallelism() >= 2 ? 2 : 1;
}

/** Prompts → a noised CLIP's unit-norm text embeddings, with the world's tokenizer at the CLIP's context. */
export function clipTextEncoder(clip: NoisedClipModel): (prompts: readonly string[]) => Tensor2D {
  const ctx = clip.config.maxTextLen;
  return (prompts) =>
    tf.tidy(() => {
      const ids = new Int32Array(prompts.length * ctx);
      for (const [i, p] of prompts.entries()) ids.set(tokenize(p, ctx), i * ctx);
      return clip.embedText(
        tf.tensor2d(ids, [prompts.length, ctx], "int32") as Tensor2D,
        textLengths(ids, ctx),
      );
    });
}

export interface LoadZooOptions {
  /**
   * 2: classifier and CLIP gradients split each batch with a worker thread (split-guide.ts). Default 1. TensorFlow.js
   * runtime only: on ONNX Runtime the gradients run on all cores already.
   */
  guideThreads?: 1 | 2;
}

export function loadZoo(
  names: Partial<ZooNames> = {},
  dir = modelsDir(),
  runtime: Runtime = "tfjs",
  opts: LoadZooOptions = {},
): Zoo {
  const n: ZooNames = { ...DEFAULT_ZOO, ...names };
  const split = opts.guideThreads === 2;
  const owned: { dispose(): void }[] = [];
  // On ONNX Runtime the denoisers run their forwards there and the guides (classifier, CLIP) their traced
  // gradients (src/onnx/guide-grad.ts); on TensorFlow.js the guides may split each batch with a worker.
  const forwards = (unet: UNet, info: ModelInfo) => {
    const f = denoiserOn(unet, runtime);
    owned.push(f);
    // The same network as a function gradients flow through, for strategies that differentiate through it
    // (clean-clip's backprop): its backward runs in chunks of rows on the same runtime (denoiser-vjp.ts), where
    // the whole batch on TensorFlow.js's tape exhausts the wasm heap.
    const g = differentiableDenoiser(unet, f.raw, runtime);
    owned.push(g);
    if (denoiserModelSchema.parse(info.config.model).prediction === "eps")
      return { model: f.model, perturbed: f.perturbed, differentiable: g.model };
    const { steps, schedule } = info.config.diffusion;
    const ab = createDiffusion({ schedule, steps }).alphasCumprod;
    return {
      model: epsFromV(f.model, ab),
      perturbed: (p: Perturbation) => epsFromV(f.perturbed(p), ab),
      differentiable: epsFromV(g.model, ab),
    };
  };
  const forward = (unet: UNet, info: ModelInfo): ModelFn => forwards(unet, info).model;
  const { info, model } = loadZooModel(n.denoiser, dir);
  owned.push(model);
  const unet = model as UNet;
  const ctx = unet.config.text?.ctx ?? 16;
  const main = forwards(unet, info);
  const models: GuidanceModels = {
    model: main.model,
    perturbed: main.perturbed,
    encode: (prompts) => encodeWorld(prompts, ctx),
    unconditionalPrompt: "",
    classifierLabel: (prompt) => {
      const y = labelForPrompt(prompt);
      if (y === undefined)
        throw new Error(`prompt '${prompt}' names no single colour and shape: no classifier label`);
      return y;
    },
  };
  if (present(n.weak, dir)) {
    const weakModel = loadZooModel(n.weak, dir);
    owned.push(weakModel.model);
    models.weak = forward(weakModel.model as UNet, weakModel.info);
  }
  let noisedClassifier: EncoderUNet | undefined;
  let noisedClip: NoisedClipModel | undefined;
  // A guide's bag keys by its task; the zoo's default guides and the ones strategies name load the same way:
  // gradients as traced ONNX graphs on ONNX Runtime, else on TensorFlow.js (split over two threads if asked).
  const loadGuide = (name: string): ZooGuide => {
    const { info: gi, model: m } = loadZooModel(name, dir);
    owned.push(m);
    return { name, task: gi.task, module: m, bag: guideBag(name, gi, m) };
  };
  const guideBag = (name: string, gi: ModelInfo, m: Module): Partial<GuidanceModels> => {
    if (gi.task === "classifier") {
      const c = m as EncoderUNet;
      noisedClassifier ??= c;
      if (runtime === "onnx") {
        const g = onnxCondGrad<Tensor1D>(name, (x, t, y) => c.logProb(x, t, y), { fallback: true });
        owned.push(g);
        return { classifier: g };
      }
      if (!split) return { classifier: c };
      const s = new SplitGuide<Tensor1D>(c, name, dir);
      owned.push(s);
      return { classifier: s };
    }
    if (gi.task === "noised-clip") {
      const clip = m as NoisedClipModel;
      noisedClip ??= clip;
      let guide: GuidanceModels["clip"] = clip;
      if (runtime === "onnx") {
        const g = onnxCondGrad<Tensor2D>(name, (x, t, z) => clip.similarity(x, t, z), { fallback: true });
        owned.push(g);
        guide = g;
      } else if (split) {
        const s = new SplitGuide<Tensor2D>(clip, name, dir);
        owned.push(s);
        guide = s;
      }
      return { clip: guide, clipText: clipTextEncoder(clip) };
    }
    if (gi.task === "eval-clip") {
      const clip = m as EvalClip;
      const textCtx = typeof gi.config.model.textCtx === "number" ? gi.config.model.textCtx : 16;
      let guide: CleanClip = clip;
      if (runtime === "onnx") {
        // clean-clip without backprop differentiates the CLIP alone: its gradient replays as a graph
        const g = new OnnxGuideGrad(name, (x, { zText }) => cleanClipLoss(clip, x, zText as Tensor2D), {
          fallback: true,
        });
        owned.push(g);
        guide = { embedImage: (x0) => clip.embedImage(x0), lossGrad: (x0, zText) => g.grad(x0, { zText }) };
      }
      return {
        cleanClip: guide,
        cleanClipText: (prompts) =>
          tf.tidy(() => {
            const c = encodeWorld(prompts, textCtx);
            return clip.embedText(c.tokens as Tensor2D, c.mask as Tensor2D);
          }),
      };
    }
    throw new Error(`model '${name}' is a ${gi.task}, not a guide (classifier, noised-clip or eval-clip)`);
  };
  // Each guide loads once, whether it is a default or named by a strategy.
  const guides = new Map<string, ZooGuide>();
  const guideOf = (name: string): ZooGuide => {
    let g = guides.get(name);
    if (!g) {
      g = loadGuide(name);
      guides.set(name, g);
    }
    return g;
  };
  for (const name of [n.classifier, n.clip, n.cleanClip]) {
    if (present(name, dir)) Object.assign(models, guideOf(name).bag);
  }
  models.guide = (name) => guideOf(name).bag;
  models.gradModel = main.differentiable;
  const base = info.config.diffusion;
  return {
    models,
    info,
    imageSize: info.config.world.size,
    ...(noisedClassifier ? { noisedClassifier } : {}),
    ...(noisedClip ? { noisedClip } : {}),
    guideModel: guideOf,
    diffusion: (respacing) =>
      createDiffusion({
        schedule: base.schedule,
        steps: base.steps,
        respacing,
        modelVarType: "learned_range",
      }),
    dispose: () => {
      for (const m of owned) m.dispose();
    },
  };
}
