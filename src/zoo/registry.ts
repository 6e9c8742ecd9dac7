// The shipped model zoo: models/<name>/{model.safetensors, model.json, CARD.md}, loaded by name. model.json is
// the trainer's export (task, recipe's model block, world and diffusion settings), so a model rebuilds exactly.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { type Tensor, tf } from "../core/engine.ts";
import { Init, type Module } from "../core/layers.ts";
import { modelsDir } from "../core/paths.ts";
import { NUM_CLASSES } from "../data/world.ts";
import { EncoderUNet } from "../nets/encoder-unet.ts";
import { MODEL_NAME } from "../nets/model-name.ts";
import { readSafetensors } from "../nets/safetensors.ts";
import { UNet } from "../nets/unet.ts";
import { diffusionSchema, type ExportedConfig, type Recipe, TASKS, worldSchema } from "../train/recipe.ts";
import {
  buildEvalClip,
  buildNoisedClip,
  classifierConfig,
  classifierModelSchema,
  denoiserModelSchema,
  denoiserUNetConfig,
  evalClipModelSchema,
  noisedClipModelSchema,
} from "../train/tasks.ts";
import { formatIssues, READABLE_PARSE } from "../util/zod-issues.ts";

export { MODEL_NAME, modelsDir };

export interface ModelInfo {
  name: string;
  dir: string;
  task: Recipe["task"];
  step: number;
  wallSeconds: number;
  bytes: number;
  config: ExportedConfig;
}

/**
 * model.json as the trainer exports it. `diffusion` and `world` are the recipe's own (strict) blocks; the top level
 * is open to fields newer exports add, so a model shipped by a newer checkout still loads here.
 */
export const exportedConfigSchema = z
  .object({
    name: z.string().min(1),
    task: z.enum(TASKS),
    model: z.record(z.string(), z.unknown()),
    diffusion: diffusionSchema,
    world: worldSchema,
    step: z.number().int().nonnegative(),
    wallSeconds: z.number().nonnegative(),
    workers: z.number().int().positive().optional(),
    runtime: z.string().optional(),
    initFrom: z.object({ model: z.string(), step: z.number().int().nonnegative() }).optional(),
  })
  .loose();

export function checkModelName(name: string, what = "model"): void {
  if (!MODEL_NAME.test(name) || name.includes(".."))
    throw new Error(
      `${what} '${name}': not a model name (letters, digits, '.', '_', '+', '-'; no '/', '..' or leading '.'): give the name of a folder in ${modelsDir()}`,
    );
}

export function listModels(dir = modelsDir()): ModelInfo[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => existsSync(join(dir, n, "model.json")))
    .sort()
    .map((n) => modelInfo(n, dir));
}

export function modelInfo(name: string, dir = modelsDir()): ModelInfo {
  checkModelName(name);
  const d = join(dir, name);
  const cfgPath = join(d, "model.json");
  if (!existsSync(cfgPath)) {
    const known = listModels(dir).map((m) => m.name);
    throw new Error(`model '${name}': no ${cfgPath} (known models: ${known.join(", ") || "none"})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(cfgPath, "utf8"));
  } catch (e) {
    throw new Error(`${cfgPath}: not valid JSON (${(e as Error).message})`);
  }
  const parsed = exportedConfigSchema.safeParse(raw, READABLE_PARSE);
  if (!parsed.success) throw new Error(formatIssues(parsed.error, cfgPath));
  const config = parsed.data as ExportedConfig;
  const weights = join(d, "model.safetensors");
  return {
    name,
    dir: d,
    task: config.task,
    step: config.step,
    wallSeconds: config.wallSeconds,
    bytes: existsSync(weights) ? statSync(weights).size : 0,
    config,
  };
}

/**
 * A relabelled dtype of the same size keeps every header check happy (shape × size still equals the byte span), so
 * the weights themselves are checked: zoo weights are floats (an F32 tensor relabelled I32, or F64 as I64, is
 * refused), they match the storage dtype the trainer stamps in the metadata (catches F16 ↔ BF16, whose bits
 * decode to finite but wrong values), and they are finite (a NaN or ±inf weight poisons every sample). Models
 * exported before the stamp get the first and last checks only; provenance's weights hash covers the rest.
 */
function checkWeights(path: string, name: string, dtype: string, data: Float32Array, stamped?: string): void {
  if (!["F32", "F16", "BF16", "F64"].includes(dtype))
    throw new Error(
      `${path}: tensor '${name}' is ${dtype}; zoo weights are floating point (relabelled dtype?)`,
    );
  if (stamped !== undefined && dtype !== stamped)
    throw new Error(
      `${path}: tensor '${name}' is labelled ${dtype} but the file was written as ${stamped} (relabelled dtype?)`,
    );
  const bad = data.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0)
    throw new Error(`${path}: tensor '${name}' holds ${data[bad]} at index ${bad} (corrupted weights?)`);
}

/** Builds the module a zoo model was trained as, with its weights. */
export function loadZooModel(name: string, dir = modelsDir()): { info: ModelInfo; model: Module } {
  const info = modelInfo(name, dir);
  let model: Module;
  switch (info.task) {
    case "denoiser": {
      const m = denoiserModelSchema.parse(info.config.model);
      model = new UNet(Init.forLoading(), denoiserUNetConfig(m, info.config.world.size));
      break;
    }
    case "classifier": {
      const m = classifierModelSchema.parse(info.config.model);
      model = new EncoderUNet(Init.forLoading(), classifierConfig(m, info.config.world.size, NUM_CLASSES));
      break;
    }
    case "noised-clip":
      model = buildNoisedClip(
        noisedClipModelSchema.parse(info.config.model),
        info.config.world.size,
        info.config.diffusion.steps,
        Init.forLoading(),
      );
      break;
    case "eval-clip":
      model = buildEvalClip(
        evalClipModelSchema.parse(info.config.model),
        info.config.world.size,
        Init.forLoading(),
      );
      break;
  }
  const path = join(info.dir, "model.safetensors");
  const file = readSafetensors(path);
  const sd = new Map<string, Tensor>();
  try {
    const stamped = file.metadata.storage_dtype;
    for (const n of file.names()) {
      const t = file.get(n);
      checkWeights(path, n, t.dtype, t.data, stamped);
      sd.set(n, tf.tensor(t.data, t.shape));
    }
    model.loadStateDict(sd, { source: path });
  } finally {
    file.close();
    tf.dispose([...sd.values()]);
  }
  return { info, model };
}
