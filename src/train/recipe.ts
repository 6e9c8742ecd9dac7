// Training recipes: short YAML diffs from the documented defaults below; unknown keys and bad values are errors
// that name the key and the file.
import { existsSync, readFileSync } from "node:fs";
import { basename, extname, join } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";

export const TASKS = ["denoiser", "classifier", "noised-clip", "eval-clip"] as const;

/**
 * Tasks whose loss compares a slice's examples with each other (CLIP's in-batch negatives). Each worker computes it
 * on its own slice, so with W workers the negatives come from batchSize/W examples, as in CLIP training without an
 * all-gather; the trainer says so when it happens and records the worker count.
 */
export const CONTRASTIVE_TASKS: ReadonlySet<(typeof TASKS)[number]> = new Set(["noised-clip", "eval-clip"]);

const optimSchema = z
  .object({
    lr: z.number().positive().default(3e-4),
    beta1: z.number().min(0).max(1).default(0.9),
    beta2: z.number().min(0).max(1).default(0.999),
    eps: z.number().positive().default(1e-8),
    weightDecay: z.number().min(0).default(0),
    clipNorm: z.number().min(0).default(1),
    /** EMA decay of the shipped weights; 0 ships the raw weights. */
    ema: z.number().min(0).max(1).default(0.999),
    warmupSteps: z.number().int().min(0).default(200),
  })
  .strict();

export const worldSchema = z
  .object({
    size: z.number().int().min(8).default(32),
    /** Probability that a training scene has two objects. */
    twoObjects: z.number().min(0).max(1).default(0.3),
  })
  .strict();

export const diffusionSchema = z
  .object({
    schedule: z.enum(["linear", "squaredcos_cap_v2", "cosine"]).default("squaredcos_cap_v2"),
    steps: z.number().int().positive().default(1000),
  })
  .strict();

export const recipeSchema = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9._-]*$/, "lower-case letters, digits, '.', '_' or '-'"),
    task: z.enum(TASKS),
    description: z.string().default(""),
    seed: z.number().int().min(0).default(0),
    steps: z.number().int().positive(),
    batchSize: z.number().int().positive().default(32),
    checkpointEvery: z.number().int().positive().default(100),
    /** Steps at which the (EMA) weights are also exported to snapshots/step-N.safetensors, e.g. an early checkpoint. */
    snapshots: z.array(z.number().int().positive()).default([]),
    optim: optimSchema.default(optimSchema.parse({})),
    world: worldSchema.default(worldSchema.parse({})),
    diffusion: diffusionSchema.default(diffusionSchema.parse({})),
    /**
     * Denoiser: min-SNR-γ weighting of the diffusion loss (Hang et al. 2023); 0 keeps the uniform weighting of Ho
     * et al. With ε-prediction it stops the nearly clean timesteps, whose loss is several times the noisy ones',
     * from taking most of each update, while the noisy ones decide the layout, the colours and what the text says.
     */
    minSnrGamma: z.number().min(0).default(0),
    /** Probability of training on the empty caption (classifier-free guidance needs an unconditional model). */
    captionDropout: z.number().min(0).max(1).default(0.2),
    /** Reuse step 0's examples at every step: a model that cannot overfit one batch has a bug. */
    fixedBatch: z.boolean().default(false),
    /** Architecture settings; each task validates its own (see src/train/tasks.ts). */
    model: z.record(z.string(), z.unknown()).default({}),
  })
  .strict();

export type Recipe = z.infer<typeof recipeSchema>;

/** model.json as the trainer exports it (the zoo's registry validates it: src/zoo/registry.ts). */
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

export function formatZodError(err: z.ZodError, source: string): string {
  return err.issues
    .map((i) => `${source}: ${i.path.length ? i.path.join(".") : "(top level)"}: ${i.message}`)
    .join("\n");
}

export function parseRecipe(raw: unknown, source: string): Recipe {
  const r = recipeSchema.safeParse(raw);
  if (!r.success) throw new Error(formatZodError(r.error, source));
  return r.data;
}

export function loadRecipe(path: string): Recipe {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    throw new Error(`recipe ${path}: file not found`);
  }
  let raw: unknown;
  try {
    raw = extname(path) === ".json" ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new Error(`recipe ${path}: not valid YAML/JSON: ${(e as Error).message.split("\n")[0]}`);
  }
  const withName =
    raw && typeof raw === "object" && !("name" in raw)
      ? { name: basename(path, extname(path)), ...raw }
      : raw;
  return parseRecipe(withName, path);
}

export const RECIPE_DIR = join(import.meta.dirname, "..", "..", "experiments", "zoo");

/** A recipe path, or the name of one kept in experiments/zoo/. */
export function resolveRecipe(nameOrPath: string): string {
  if (existsSync(nameOrPath)) return nameOrPath;
  const named = join(RECIPE_DIR, `${nameOrPath}.yaml`);
  if (existsSync(named)) return named;
  throw new Error(`recipe '${nameOrPath}': no such file, and no ${named}`);
}
