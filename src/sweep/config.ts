// Sweep configs: short YAML diffs from the documented defaults below. Everything that can be checked without
// sampling is checked here (unknown keys, types, strategy kinds and their parameters, metric names, an empty
// grid), so a typo fails in a second rather than after hours of sampling. Errors name the file and the key.
import { readFileSync, writeFileSync } from "node:fs";
import { basename, dirname, extname, isAbsolute, join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { checkSchedule } from "../core/samplers/loop.ts";
import { SAMPLER_NAMES, type SamplerName, samplerDef } from "../core/samplers/registry.ts";
import { SCHEDULES, type ScheduleName } from "../core/samplers/sampler.ts";
import { SUITE_NAMES, suite } from "../data/suites.ts";
import { parseCaption, type SceneSpec } from "../data/world.ts";
import { METRIC_NAMES } from "../metrics/index.ts";
import { RUNTIMES, type RuntimeChoice } from "../onnx/choice.ts";
import { formatIssues, READABLE_PARSE } from "../util/zod-issues.ts";
import { MODEL_NAME } from "../zoo/registry.ts";
import { DEFAULT_ZOO } from "../zoo/zoo.ts";
import { refuseEvalClipGuides } from "./guides.ts";

const oneOrMany = <T extends z.ZodType>(s: T) => z.union([s, z.array(s).min(1)]);

const suitePrompts = z
  .object({
    suite: z.enum(SUITE_NAMES),
    /** Number of prompts (seeded shuffle); omitted: every distinct prompt of the suite once. */
    n: z.number().int().positive().optional(),
    seed: z.number().int().default(0),
    includeHeldOut: z.boolean().default(false),
  })
  .strict();

/** One prompt per non-empty line; `#` starts a comment line. Relative paths are relative to the config file. */
const filePrompts = z.object({ file: z.string().min(1) }).strict();

const promptEntry = z.union([z.string().min(1), suitePrompts, filePrompts]);

/** A strategy config whose values may be lists (grid axes); `scales` gives one cell per scale. */
const strategyEntry = z
  .object({
    kind: z.string().min(1),
    scales: z.array(z.number()).min(1).optional(),
  })
  .catchall(z.unknown());

/** The `models` key's defaults: the shipped zoo's names (src/zoo/zoo.ts). */
export const DEFAULT_MODELS = {
  denoiser: DEFAULT_ZOO.denoiser,
  weak: DEFAULT_ZOO.weak,
  classifier: DEFAULT_ZOO.classifier,
  clip: DEFAULT_ZOO.clip,
  evalClip: DEFAULT_ZOO.evalClip,
} as const;

/** A zoo model's folder name, never a path (zoo/registry.ts). */
const modelName = z
  .string()
  .regex(
    MODEL_NAME,
    "expected a model name (letters, digits, '.', '_', '+', '-'; no '/' and no leading '.')",
  );

export { SAMPLER_NAMES, type SamplerName } from "../core/samplers/registry.ts";

export const sweepSchema = z
  .object({
    /** Zoo model names (folders of GUIDANCE_LAB_MODELS). Absent optional models just disable what needs them. */
    models: z
      .object({
        denoiser: modelName.default(DEFAULT_MODELS.denoiser),
        weak: modelName.default(DEFAULT_MODELS.weak),
        classifier: modelName.default(DEFAULT_MODELS.classifier),
        clip: modelName.default(DEFAULT_MODELS.clip),
        evalClip: modelName.default(DEFAULT_MODELS.evalClip),
      })
      .strict()
      .default(DEFAULT_MODELS),
    /** Inline texts, `{file}`, `{suite, n, seed}`, or a list mixing them. */
    prompts: oneOrMany(promptEntry),
    strategies: z.array(strategyEntry).min(1),
    steps: oneOrMany(z.number().int().positive()).default([50]),
    /** Registry samplers (src/core/samplers/registry.ts); one cell per sampler. */
    sampler: oneOrMany(z.enum(SAMPLER_NAMES)).default(["ddpm"]),
    /**
     * η of the samplers that take one (ddim: default 0 = deterministic; euler_ancestral, dpmpp_2m_sde, dpmpp_3m_sde:
     * default 1, k-diffusion's); ignored by the others.
     */
    eta: z.number().min(0).optional(),
    /** Timestep / σ schedule of every sampler (karras and exponential: σ-space samplers only). */
    schedule: z.enum(SCHEDULES).default("default"),
    samplesPerPrompt: z.number().int().positive().default(4),
    seed: z.number().int().default(0),
    metrics: z.array(z.enum(METRIC_NAMES as [string, ...string[]])).default([...METRIC_NAMES]),
    batchSize: z.number().int().positive().default(16),
    /**
     * The paired prompt bootstrap behind every interval (src/stats): `b` replicates drawn from `seed`, the same
     * draws in every cell. Changing them changes no sample, only the intervals the report computes.
     */
    bootstrap: z
      .object({
        b: z.number().int().min(100).max(100_000).default(1000),
        seed: z.number().int().default(0),
      })
      .strict()
      .default({ b: 1000, seed: 0 }),
    /** Run folder; default runs/<config file name>. The CLI's --out wins. */
    out: z.string().min(1).optional(),
    /**
     * Runtime of the denoisers' forwards (auto: ONNX Runtime when onnxruntime-node loads); the CLI's --runtime
     * wins. Not part of the resolved config: like the backend, it is recorded in env.json, and shards or resumed
     * runs on another runtime still merge.
     */
    runtime: z.enum(RUNTIMES).optional(),
    /**
     * An OpenAI CLIP ViT as the evaluation CLIP instead of the zoo's (GLIDE §5.1 used a public ViT-B/16):
     * `weights` is the official state dict as safetensors, `vocab` CLIP's bpe_simple_vocab_16e6.txt.gz (default:
     * $GUIDANCE_LAB_CLIP_BPE). Relative paths are relative to the config file.
     */
    evalClipOpenai: z
      .object({ weights: z.string().min(1), vocab: z.string().min(1).optional() })
      .strict()
      .optional(),
  })
  .strict();

export type SweepInput = z.input<typeof sweepSchema>;

export interface ResolvedPrompt {
  id: string;
  text: string;
  suite?: string;
  spec?: SceneSpec;
}

/** What the runner uses and writes to config.json: every default filled in, prompts expanded. */
export interface SweepConfig {
  models: Record<keyof typeof DEFAULT_MODELS, string>;
  /** Model keys the config named explicitly: these must exist, the defaulted ones may be absent. */
  modelsGiven: string[];
  prompts: ResolvedPrompt[];
  strategies: ({ kind: string } & Record<string, unknown>)[];
  steps: number[];
  sampler: SamplerName[];
  /** Absent: each sampler's own default η. */
  eta?: number;
  /** Absent in configs made before schedules existed, which all ran "default". */
  schedule?: ScheduleName;
  samplesPerPrompt: number;
  seed: number;
  metrics: string[];
  batchSize: number;
  bootstrap: { b: number; seed: number };
  /** Present when an OpenAI CLIP replaces the zoo's evaluation CLIP (absolute paths). */
  evalClipOpenai?: { weights: string; vocab?: string };
}

export interface LoadedSweep {
  config: SweepConfig;
  out?: string;
  runtime?: RuntimeChoice;
  /** The config file (for error messages and the default run folder). */
  source: string;
}

const asList = <T>(v: T | T[]): T[] => (Array.isArray(v) ? v : [v]);

function readPromptFile(file: string, configDir: string, source: string, key: string): string[] {
  const path = isAbsolute(file) ? file : join(configDir, file);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    throw new Error(`${source}: ${key}.file: cannot read ${path}`);
  }
  const lines = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  if (!lines.length) throw new Error(`${source}: ${key}.file: ${path} has no prompts`);
  return lines;
}

function resolvePrompts(
  raw: z.infer<typeof sweepSchema>["prompts"],
  configDir: string,
  source: string,
): ResolvedPrompt[] {
  const entries = asList(raw);
  const out: ResolvedPrompt[] = [];
  const fromText = (text: string, id: string): ResolvedPrompt => {
    // World captions get a spec so prompt_accuracy can judge them; free text simply has none.
    const spec = parseCaption(text);
    return { id, text, ...(spec ? { spec } : {}) };
  };
  entries.forEach((e, i) => {
    const key = Array.isArray(raw) ? `prompts.${i}` : "prompts";
    if (typeof e === "string") out.push(fromText(e, `prompt/${out.length}`));
    else if ("file" in e)
      for (const t of readPromptFile(e.file, configDir, source, key))
        out.push(fromText(t, `file/${out.length}`));
    else
      for (const p of suite(e.suite, {
        ...(e.n !== undefined ? { n: e.n } : {}),
        seed: e.seed,
        includeHeldOut: e.includeHeldOut,
      }))
        out.push({ id: `${p.id}@${i}`, text: p.text, suite: p.suite, spec: p.spec });
  });
  return out;
}

/** Validates a parsed config; `source` (the file) prefixes every error line. */
export function parseSweepConfig(raw: unknown, source: string, configDir = "."): LoadedSweep {
  const r = sweepSchema.safeParse(raw, READABLE_PARSE);
  if (!r.success) throw new Error(formatIssues(r.error, source));
  const c = r.data;
  const modelsGiven =
    raw && typeof raw === "object" && "models" in raw && raw.models && typeof raw.models === "object"
      ? Object.keys(raw.models)
      : [];
  if (c.evalClipOpenai && modelsGiven.includes("evalClip")) {
    throw new Error(`${source}: evalClipOpenai: replaces models.evalClip; give one of the two`);
  }
  if (!c.evalClipOpenai) refuseEvalClipGuides(c.strategies, c.models.evalClip, source);
  for (const name of asList(c.sampler)) {
    try {
      checkSchedule(samplerDef(name), c.schedule);
    } catch (e) {
      throw new Error(`${source}: schedule: ${(e as Error).message}`);
    }
  }
  const fromConfig = (p: string) => (isAbsolute(p) ? p : join(configDir, p));
  const config: SweepConfig = {
    models: c.models,
    modelsGiven,
    prompts: resolvePrompts(c.prompts, configDir, source),
    strategies: c.strategies as SweepConfig["strategies"],
    steps: asList(c.steps),
    sampler: asList(c.sampler),
    ...(c.eta !== undefined ? { eta: c.eta } : {}),
    ...(c.schedule !== "default" ? { schedule: c.schedule } : {}),
    samplesPerPrompt: c.samplesPerPrompt,
    seed: c.seed,
    metrics: c.metrics,
    batchSize: c.batchSize,
    bootstrap: c.bootstrap,
    ...(c.evalClipOpenai
      ? {
          evalClipOpenai: {
            weights: fromConfig(c.evalClipOpenai.weights),
            ...(c.evalClipOpenai.vocab ? { vocab: fromConfig(c.evalClipOpenai.vocab) } : {}),
          },
        }
      : {}),
  };
  return {
    config,
    // Like every path in a config, `out` is relative to the config's folder, not to where the command runs.
    ...(c.out !== undefined ? { out: fromConfig(c.out) } : {}),
    ...(c.runtime !== undefined ? { runtime: c.runtime } : {}),
    source,
  };
}

export function loadSweepConfig(path: string): LoadedSweep {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    throw new Error(`sweep config ${path}: file not found`);
  }
  let raw: unknown;
  try {
    raw = extname(path) === ".json" ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new Error(`sweep config ${path}: not valid YAML/JSON: ${(e as Error).message.split("\n")[0]}`);
  }
  return parseSweepConfig(raw, path, dirname(resolve(path)));
}

/** Default run folder of a config file: runs/<name without extension>. */
export function defaultOut(configPath: string): string {
  return join("runs", basename(configPath, extname(configPath)));
}

/** JSON Schema of the sweep config's input (defaults are optional), for editors' YAML completion. */
export function sweepJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(sweepSchema, { io: "input", unrepresentable: "any" }) as Record<string, unknown>;
}

export const SCHEMA_PATH = join(import.meta.dirname, "..", "..", "configs", "sweep.schema.json");

export function sweepJsonSchemaText(): string {
  return `${JSON.stringify(sweepJsonSchema(), null, 2)}\n`;
}

export function writeSweepJsonSchema(path = SCHEMA_PATH): void {
  writeFileSync(path, sweepJsonSchemaText());
}
