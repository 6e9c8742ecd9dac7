// The golden directory's models for the model-driven sections: each is built from its manifest config block
// (meta.small_*; nothing here knows this golden set's sizes) and loaded from weights/<name>.safetensors with the
// official-checkpoint loader, so a section exercises exactly what a user's real checkpoint goes through.
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Tensor, Tensor1D, Tensor2D, Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import { Init, type Module } from "../core/layers.ts";
import { ClipModel, clipConfigFromOfficial } from "../nets/clip.ts";
import { gdUnetConfigFromOfficial, glideConfigFromOfficial } from "../nets/configs.ts";
import { loadOfficial, type ModelFamily } from "../nets/convert.ts";
import { classifierConfigFromOfficial, EncoderUNet } from "../nets/encoder-unet.ts";
import { UNet } from "../nets/unet.ts";
import { onnxCondGrad } from "../onnx/guide-grad.ts";
import { type DenoiserForward, denoiserOn } from "../onnx/runtime.ts";
import type { ModelFn, NoisedClassifier, NoisedClip } from "../strategies/strategy.ts";
import { compare, GoldenError, guard, type Row, SectionContext } from "./common.ts";

/** The golden set's weight files and the manifest blocks that configure them. */
export const GOLDEN_MODELS = {
  glide: { weights: "glide_small", meta: "small_glide", family: "glide-unet" },
  gdUnet: { weights: "gd_unet_small", meta: "small_gd_model", family: "gd-unet" },
  classifier: { weights: "gd_classifier_small", meta: "small_gd_classifier", family: "gd-classifier" },
  clip: { weights: "clip_small", meta: "small_clip", family: "glide-clip" },
} as const satisfies Record<string, { weights: string; meta: string; family: ModelFamily }>;

type Key = keyof typeof GOLDEN_MODELS;

/**
 * Loads weights/<name>.safetensors into `module`. Problems become GoldenErrors whose one line names the file and
 * the first problem (loadOfficial lists them all over several lines, and a row note keeps only one).
 */
function loadWeights<M extends Module>(ctx: SectionContext, module: M, key: Key): M {
  const spec = GOLDEN_MODELS[key];
  const rel = `weights/${spec.weights}.safetensors`;
  const file = join(ctx.dir, rel);
  if (!existsSync(file)) {
    module.dispose();
    throw new GoldenError(`${rel}: file not found`);
  }
  try {
    loadOfficial(module, file, spec.family);
  } catch (err) {
    module.dispose();
    const lines = (err as Error).message
      .replaceAll(` from ${file}`, "")
      .replaceAll(file, rel)
      .split("\n")
      .map((l) => l.trim());
    const head = [lines[0], lines[1]].filter(Boolean).join(": ");
    throw new GoldenError(head.startsWith(rel) ? head : `${rel}: ${head}`);
  }
  return module;
}

function build<M extends Module>(make: () => M): M {
  try {
    return make();
  } catch (err) {
    throw new GoldenError(`model config: ${(err as Error).message}`);
  }
}

const block = (ctx: SectionContext, key: Key) => ctx.meta<Record<string, unknown>>(GOLDEN_MODELS[key].meta);

export function goldenGlide(ctx: SectionContext): UNet {
  const config = glideConfigFromOfficial(block(ctx, "glide"));
  return loadWeights(
    ctx,
    build(() => new UNet(Init.forLoading(), config)),
    "glide",
  );
}

export function goldenGdUnet(ctx: SectionContext): UNet {
  const config = gdUnetConfigFromOfficial(block(ctx, "gdUnet"));
  return loadWeights(
    ctx,
    build(() => new UNet(Init.forLoading(), config)),
    "gdUnet",
  );
}

export function goldenClassifier(ctx: SectionContext): EncoderUNet {
  const config = classifierConfigFromOfficial(block(ctx, "classifier"));
  return loadWeights(
    ctx,
    build(() => new EncoderUNet(Init.forLoading(), config)),
    "classifier",
  );
}

export function goldenClip(ctx: SectionContext): ClipModel {
  const config = clipConfigFromOfficial(block(ctx, "clip"));
  return loadWeights(
    ctx,
    build(() => new ClipModel(Init.forLoading(), config)),
    "clip",
  );
}

/** One exact row: the loaded model's parameter count against manifest meta.params.<weights> (when listed). */
export function paramsRow(ctx: SectionContext, key: Key, model: Module): Row[] {
  const name = GOLDEN_MODELS[key].weights;
  const listed = (ctx.manifest?.meta?.params as Record<string, number> | undefined)?.[name];
  if (listed === undefined) return [];
  return [compare(ctx.section, `${name} parameters (${listed})`, [listed], [model.numParams()], 0)];
}

/** The same golden directory seen from another section (inputs some sections share). */
export function sibling(ctx: SectionContext, section: string): SectionContext {
  return new SectionContext(ctx.dir, section, ctx.manifest, undefined, ctx.runtime);
}

/** An int32 tensor from an integer array file (token ids, timesteps, labels). */
export function intTensor(ctx: SectionContext, name: string): Tensor {
  const arr = ctx.load(name);
  return tf.tensor(Int32Array.from(ctx.loadNumbers(name)), arr.shape, "int32");
}

/** A float mask tensor (1 = real token) from a uint8/bool file. */
export function maskTensor(ctx: SectionContext, name: string): Tensor2D {
  const arr = ctx.load(name);
  if (arr.shape.length !== 2)
    throw new GoldenError(`${ctx.rel(name)}: expected [B, ctx], got [${arr.shape}]`);
  return tf.tensor2d(Float32Array.from(ctx.loadNumbers(name)), arr.shape as [number, number]);
}

/** A golden UNet's forward on the section's runtime; `runtime` names it in the row notes. */
export function goldenDenoiser(ctx: SectionContext, unet: UNet): DenoiserForward {
  return denoiserOn(unet, ctx.runtime);
}

/** Wall time of a section's heavy part, for the row notes (the verifier's runtime is part of its contract). */
export function timed<T>(fn: () => T): { value: T; seconds: number } {
  const t0 = performance.now();
  const value = fn();
  return { value, seconds: (performance.now() - t0) / 1000 };
}

/** Runs `fn` in a tensor scope that frees every tensor it made; unlike tf.tidy, it may return plain values. */
export function scoped<T>(fn: () => T): T {
  tf.engine().startScope();
  try {
    return fn();
  } finally {
    tf.engine().endScope();
  }
}

/**
 * Loads golden models (`loads`, in order; a failure is one "weights" row, and the rows `weightsRows` gives for the
 * loaded models are reported with it), runs `checks` with them, and frees every model that was loaded, in load
 * order, whatever happens.
 */
export function withGoldenModels<const L extends readonly ((ctx: SectionContext) => Module)[]>(
  ctx: SectionContext,
  loads: L,
  checks: (models: { [K in keyof L]: L[K] extends (ctx: SectionContext) => infer M ? M : never }) => Row[],
  weightsRows: (models: Parameters<typeof checks>[0]) => Row[] = () => [],
): Row[] {
  type Models = Parameters<typeof checks>[0];
  const loaded: Module[] = [];
  let models: Models | undefined;
  const rows = guard(ctx.section, "weights", () => {
    for (const load of loads) loaded.push(load(ctx));
    models = loaded as unknown as Models;
    return weightsRows(models);
  });
  try {
    if (models) rows.push(...checks(models));
  } finally {
    for (const m of loaded) m.dispose();
  }
  return rows;
}

/** Loads a golden model (reported as a "weights" row), runs `checks` with it, and frees it whatever happens. */
export function withGoldenModel<M extends Module>(
  ctx: SectionContext,
  key: Key,
  load: (ctx: SectionContext) => M,
  checks: (model: M) => Row[],
): Row[] {
  return withGoldenModels(
    ctx,
    [load],
    ([model]) => checks(model),
    ([model]) => paramsRow(ctx, key, model),
  );
}

/**
 * Runs `fn` with a golden UNet's forward on the section's runtime (goldenDenoiser), timed, and frees the denoiser
 * whatever happens; `runtime` names it for the row notes.
 */
export function withDenoiser<T>(
  ctx: SectionContext,
  unet: UNet,
  fn: (model: ModelFn) => T,
): { value: T; seconds: number; runtime: string } {
  const denoiser = goldenDenoiser(ctx, unet);
  const { value, seconds } = timed(() => {
    try {
      return fn(denoiser.model);
    } finally {
      denoiser.dispose();
    }
  });
  return { value, seconds, runtime: denoiser.runtime };
}

/**
 * Runs `fn` with the golden classifier's guidance gradient on the section's runtime: the model's own condGrad on
 * TensorFlow.js, its traced graph on ONNX Runtime (src/onnx/guide-grad.ts), freed whatever happens.
 */
export function withClassifierGuide<T>(
  ctx: SectionContext,
  classifier: EncoderUNet,
  fn: (guide: NoisedClassifier) => T,
): T {
  if (ctx.runtime !== "onnx") return fn(classifier);
  const g = onnxCondGrad<Tensor1D>("golden classifier", (x, t, y) => classifier.logProb(x, t, y));
  try {
    return fn(g);
  } finally {
    g.dispose();
  }
}

/** withClassifierGuide for the golden noised CLIP's guidance gradient. */
export function withClipGuide<T>(ctx: SectionContext, clip: ClipModel, fn: (guide: NoisedClip) => T): T {
  if (ctx.runtime !== "onnx") return fn(clip);
  const g = onnxCondGrad<Tensor2D>("golden CLIP", (x: Tensor4D, t, z) => clip.similarity(x, t, z));
  try {
    return fn(g);
  } finally {
    g.dispose();
  }
}
