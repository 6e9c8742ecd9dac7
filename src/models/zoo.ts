// The embedded default's models as one GuidanceModels bag: the zoo denoiser (and its early checkpoint for
// autoguidance), the noised classifier and the noised CLIP, with the world's tokenizer and label map. Models not
// shipped yet are simply absent, so a strategy that needs one fails with an error naming it.
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { createDiffusion, type GaussianDiffusion } from "../core/diffusion.ts";
import { type Tensor1D, type Tensor2D, tf } from "../core/engine.ts";
import { labelForPrompt, tokenize } from "../data/world.ts";
import type { Runtime } from "../onnx/choice.ts";
import { onnxCondGrad } from "../onnx/guide-grad.ts";
import { denoiserOn } from "../onnx/runtime.ts";
import type { GuidanceModels, ModelFn } from "../strategies/strategy.ts";
import { denoiserModelSchema, textLengths } from "../train/tasks.ts";
import type { NoisedClipModel } from "./clip.ts";
import type { EncoderUNet } from "./encoder-unet.ts";
import type { Perturbation } from "./perturb.ts";
import { loadZooModel, type ModelInfo, modelsDir } from "./registry.ts";
import { SplitGuide } from "./split-guide.ts";
import type { UNet } from "./unet.ts";
import { encodeWorld, epsFromV } from "./zoo-models.ts";

export { encodeWorld, epsFromV } from "./zoo-models.ts";

export interface ZooNames {
  denoiser: string;
  weak: string;
  classifier: string;
  clip: string;
}

export const DEFAULT_ZOO: ZooNames = {
  denoiser: "denoiser",
  weak: "denoiser-early",
  classifier: "classifier",
  clip: "noised-clip",
};

export interface Zoo {
  models: GuidanceModels;
  info: ModelInfo;
  imageSize: number;
  /** The noised classifier and CLIP themselves, for their forwards (models.classifier and models.clip may be
   * gradient-only wrappers), when shipped. */
  noisedClassifier?: EncoderUNet;
  noisedClip?: NoisedClipModel;
  /** A diffusion over the denoiser's schedule, respaced as asked ("50", "ddim25", ...). */
  diffusion(respacing: string): GaussianDiffusion;
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
  const n = { ...DEFAULT_ZOO, ...names };
  const split = opts.guideThreads === 2;
  const owned: { dispose(): void }[] = [];
  // On ONNX Runtime the denoisers run their forwards there and the guides (classifier, CLIP) their traced
  // gradients (src/onnx/guide-grad.ts); on TensorFlow.js the guides may split each batch with a worker.
  const forwards = (unet: UNet, info: ModelInfo) => {
    const f = denoiserOn(unet, runtime);
    owned.push(f);
    if (denoiserModelSchema.parse(info.config.model).prediction === "eps") return f;
    const { steps, schedule } = info.config.diffusion;
    const ab = createDiffusion({ schedule, steps }).alphasCumprod;
    return { model: epsFromV(f.model, ab), perturbed: (p: Perturbation) => epsFromV(f.perturbed(p), ab) };
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
  if (present(n.classifier, dir)) {
    const c = loadZooModel(n.classifier, dir).model as EncoderUNet;
    noisedClassifier = c;
    owned.push(c);
    models.classifier = c;
    if (runtime === "onnx") {
      const g = onnxCondGrad<Tensor1D>(n.classifier, (x, t, y) => c.logProb(x, t, y), {
        fallback: true,
      });
      owned.push(g);
      models.classifier = g;
    } else if (split) {
      const s = new SplitGuide<Tensor1D>(c, n.classifier, dir);
      owned.push(s);
      models.classifier = s;
    }
  }
  let noisedClip: NoisedClipModel | undefined;
  if (present(n.clip, dir)) {
    const clip = loadZooModel(n.clip, dir).model as NoisedClipModel;
    noisedClip = clip;
    owned.push(clip);
    models.clip = clip;
    if (runtime === "onnx") {
      const g = onnxCondGrad<Tensor2D>(n.clip, (x, t, z) => clip.similarity(x, t, z), {
        fallback: true,
      });
      owned.push(g);
      models.clip = g;
    } else if (split) {
      const s = new SplitGuide<Tensor2D>(clip, n.clip, dir);
      owned.push(s);
      models.clip = s;
    }
    models.clipText = clipTextEncoder(clip);
  }
  const base = info.config.diffusion;
  return {
    models,
    info,
    imageSize: info.config.world.size,
    ...(noisedClassifier ? { noisedClassifier } : {}),
    ...(noisedClip ? { noisedClip } : {}),
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
