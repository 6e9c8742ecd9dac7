// The shipped model zoo: models/<name>/{model.safetensors, model.json, CARD.md}, loaded by name. model.json is
// the trainer's export (task, recipe's model block, world and diffusion settings), so a model rebuilds exactly.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { type Tensor, tf } from "../core/engine.ts";
import { Init, type Module } from "../core/layers.ts";
import { REPO_ROOT } from "../core/paths.ts";
import { NUM_CLASSES } from "../data/world.ts";
import { type Recipe, TASKS } from "../train/recipe.ts";
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
import { EncoderUNet } from "./encoder-unet.ts";
import { readSafetensors } from "./safetensors.ts";
import { UNet } from "./unet.ts";

/** Where shipped models live: GUIDANCE_LAB_MODELS, else the repository's models/ folder (read at each call). */
export function modelsDir(): string {
  return process.env.GUIDANCE_LAB_MODELS ?? join(REPO_ROOT, "models");
}

export interface ModelInfo {
  name: string;
  dir: string;
  task: Recipe["task"];
  step: number;
  wallSeconds: number;
  bytes: number;
  config: ExportedConfig;
}

export interface ExportedConfig {
  name: string;
  task: Recipe["task"];
  model: Record<string, unknown>;
  diffusion: Recipe["diffusion"];
  world: Recipe["world"];
  step: number;
  wallSeconds: number;
  /** Slices of each batch in the session that exported it: TensorFlow.js workers, 1 on ONNX Runtime (absent in
   * exports older than the field). */
  workers?: number;
  /** Where its gradients were computed in the session that exported it: "onnx" or "tfjs" (absent before the field). */
  runtime?: string;
  /** The exported model a run started from (train --init-from), when it did. */
  initFrom?: { model: string; step: number };
}

export function listModels(dir = modelsDir()): ModelInfo[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => existsSync(join(dir, n, "model.json")))
    .sort()
    .map((n) => modelInfo(n, dir));
}

export function modelInfo(name: string, dir = modelsDir()): ModelInfo {
  const d = join(dir, name);
  const cfgPath = join(d, "model.json");
  if (!existsSync(cfgPath)) {
    const known = listModels(dir).map((m) => m.name);
    throw new Error(`model '${name}': no ${cfgPath} (known models: ${known.join(", ") || "none"})`);
  }
  let config: ExportedConfig;
  try {
    config = JSON.parse(readFileSync(cfgPath, "utf8")) as ExportedConfig;
  } catch (e) {
    throw new Error(`${cfgPath}: not valid JSON (${(e as Error).message})`);
  }
  if (!(TASKS as readonly string[]).includes(config.task)) {
    throw new Error(`${cfgPath}: task '${config.task}' is not one of ${TASKS.join(", ")}`);
  }
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
    for (const n of file.names()) {
      const t = file.get(n);
      sd.set(n, tf.tensor(t.data, t.shape));
    }
    model.loadStateDict(sd, { source: path });
  } finally {
    file.close();
    tf.dispose([...sd.values()]);
  }
  return { info, model };
}
