// `guidance-lab sweep CONFIG`: sample every cell of a config and write the run folder the report reads
// (src/report/README.md). Comparisons are paired: image j of prompt p starts from the same x_T and sees the same
// per-step noise in every cell, derived from (seed, p, j) alone, so neither batching, sharding nor resuming changes
// a single pixel. A cell exists once its record.json does, and that file is written last by rename, so a crash or
// a signal never leaves a half-written record: the cell is simply redone by --resume.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import type { GaussianDiffusion } from "../core/diffusion.ts";
import { type BackendChoice, type EngineInfo, initEngine, type Tensor4D, tf } from "../core/engine.ts";
import { samplerDef, samplerEta } from "../core/samplers.ts";
import type { NoiseSource } from "../core/types.ts";
import { encodePng, gridImage } from "../data/png.ts";
import { render, sceneForSpec } from "../data/world.ts";
import {
  type CostSample,
  checkMetrics,
  classifierProbabilities,
  computeMetrics,
  evalClipEmbedder,
  guidanceClipEmbedder,
  type MetricContext,
  type MetricPrompt,
  openaiClipEmbedder,
  type ReferenceObservations,
} from "../metrics/index.ts";
import { flatten } from "../metrics/observations.ts";
import type { EvalClip } from "../nets/eval-clip.ts";
import { loadOpenAIEvalClip } from "../nets/openai-clip.ts";
import { type Runtime, type RuntimeChoice, resolveRuntime } from "../onnx/choice.ts";
import { type MetricModels, metricModelsOn } from "../onnx/metric-models.ts";
import { sampleBatches, samplerDiffusion } from "../pipelines/sampling.ts";
import { buildReport } from "../report/index.ts";
import { writeCellObservations, writeReferenceObservations } from "../report/observations.ts";
import { buildStrategy } from "../strategies/registry.ts";
import type { Strategy } from "../strategies/strategy.ts";
import { formatDuration, Progress } from "../util/progress.ts";
import { hashSeed, Rng } from "../util/rng.ts";
import { loadZooModel, modelInfo, modelsDir } from "../zoo/registry.ts";
import { DEFAULT_ZOO, defaultGuideThreads, loadZoo, type Zoo } from "../zoo/zoo.ts";
import { defaultOut, loadSweepConfig, type SweepConfig } from "./config.ts";
import { checkGuides, guideModelNames, guideScores, guidesUsed } from "./guides.ts";
import { acquireLock, checkNotLocked, LOCK_FILE } from "./lock.ts";
import { type Cell, canonicalJson, parseShard, planCells, type Shard, shardCells } from "./plan.ts";
import { checkPrerequisites } from "./prerequisites.ts";
import { asProvenance, type Provenance, provenanceDiff, runProvenance } from "./provenance.ts";
import { readRecord } from "./records.ts";

export interface SweepOptions {
  out?: string;
  resume?: boolean;
  /** "i/n" (1-based) or a parsed shard. */
  shard?: string | Shard;
  backend?: BackendChoice;
  /** Runtime of the denoisers' forwards; default the config's `runtime` key, else auto. */
  runtime?: RuntimeChoice;
  /** Stop after this many cells (the rest stay pending for --resume). */
  limit?: number;
  /** Called after each finished cell (tests use it to pace a child process they kill). */
  afterCell?: (cellId: string) => void | Promise<void>;
  /** Progress and summary lines; default stderr/stdout. */
  quiet?: boolean;
  /** Take over a run-folder lock whose process is gone (lock.ts). */
  force?: boolean;
}

export interface SweepResult {
  out: string;
  cells: string[];
  finished: string[];
  skipped: string[];
  /** Cells of this shard left unfinished (limit or signal). */
  remaining: string[];
  /** The report's paths; not rebuilt when `interrupted` (`guidance-lab report OUT` rebuilds it). */
  htmlPath: string;
  csvPath: string;
  /** The signal that stopped the sweep early (the CLI exits 128 + its number). */
  interrupted?: "SIGINT" | "SIGTERM";
}

/** What the run folder's config.json holds: the resolved config (no output path or shard, so shards agree). */
export function resolvedConfigJson(config: SweepConfig): string {
  return `${JSON.stringify(config, null, 2)}\n`;
}

/** Write via a temporary file and rename, so readers see the old file or the whole new one, nothing between. */
export function writeAtomic(path: string, data: string | Buffer): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

interface Sample {
  prompt: MetricPrompt;
  promptIndex: number;
  index: number;
  seed: number;
}

function samplesOf(config: SweepConfig): Sample[] {
  return config.prompts.flatMap((prompt, promptIndex) =>
    Array.from({ length: config.samplesPerPrompt }, (_, index) => ({
      prompt,
      promptIndex,
      index,
      seed: hashSeed(config.seed, "x_T", promptIndex, index),
    })),
  );
}

function normals(seed: number, n: number, out: Float32Array, offset: number): void {
  const rng = new Rng(seed);
  for (let i = 0; i < n; i++) out[offset + i] = rng.normal();
}

/** x_T of a batch: each row from its own sample's seed. */
function initialNoise(batch: readonly Sample[], size: number): Tensor4D {
  const per = size * size * 3;
  const data = new Float32Array(batch.length * per);
  batch.forEach((s, i) => {
    normals(s.seed, per, data, i * per);
  });
  return tf.tensor4d(data, [batch.length, size, size, 3]);
}

/** Per-step noise with one stream per (sample, step), so a sample's trajectory ignores its batch-mates. */
function pairedNoise(config: SweepConfig, batch: readonly Sample[]): NoiseSource {
  return (k, shape) => {
    const per = shape.slice(1).reduce((a, b) => a * b, 1);
    const data = new Float32Array(batch.length * per);
    batch.forEach((s, i) => {
      normals(hashSeed(config.seed, "step", s.promptIndex, s.index, k), per, data, i * per);
    });
    return tf.tensor4d(data, shape as [number, number, number, number]);
  };
}

class Abandoned extends Error {}

interface Loaded {
  zoo: Zoo;
  ctx: MetricContext;
  /** The metrics' model forwards (and the guide scores'), on the denoisers' runtime. */
  forwards: MetricModels;
  dispose(): void;
}

function loadModels(config: SweepConfig, source: string, runtime: Runtime): Loaded {
  const dir = modelsDir();
  for (const key of config.modelsGiven) {
    const name = config.models[key as keyof SweepConfig["models"]];
    try {
      modelInfo(name, dir);
    } catch (e) {
      throw new Error(`${source}: models.${key}: ${(e as Error).message}`);
    }
  }
  checkGuides(config.strategies, config.evalClipOpenai ? undefined : config.models.evalClip, dir, source);
  let zoo: Zoo;
  try {
    zoo = loadZoo(config.models, dir, runtime, { guideThreads: defaultGuideThreads() });
  } catch (e) {
    throw new Error(`${source}: models.denoiser: ${(e as Error).message}`);
  }
  // The metrics' forwards follow the denoisers' runtime (ONNX Runtime: traced graphs, src/onnx/metric-models.ts).
  const forwards = metricModelsOn(runtime);
  const owned: { dispose(): void }[] = [forwards];
  const ctx: MetricContext = {};
  if (config.evalClipOpenai) {
    let clip: ReturnType<typeof loadOpenAIEvalClip>;
    try {
      clip = loadOpenAIEvalClip(config.evalClipOpenai);
    } catch (e) {
      throw new Error(`${source}: evalClipOpenai: ${(e as Error).message}`);
    }
    owned.push(clip.model);
    ctx.evalEmbedder = openaiClipEmbedder(clip.model, clip.tokenizer);
  } else if (existsSync(join(dir, config.models.evalClip, "model.json"))) {
    const { info, model } = loadZooModel(config.models.evalClip, dir);
    owned.push(model);
    const textCtx = typeof info.config.model.textCtx === "number" ? info.config.model.textCtx : 16;
    ctx.evalEmbedder = evalClipEmbedder(forwards.evalClip(model as EvalClip), textCtx);
  }
  if (zoo.noisedClip && zoo.models.clipText) {
    ctx.guidanceEmbedder = guidanceClipEmbedder(forwards.noisedClip(zoo.noisedClip), zoo.models.clipText);
  }
  if (zoo.noisedClassifier)
    ctx.classProbabilities = classifierProbabilities(forwards.classifier(zoo.noisedClassifier));
  return {
    zoo,
    ctx,
    forwards,
    dispose: () => {
      for (const m of owned) m.dispose();
      zoo.dispose();
    },
  };
}

/**
 * Real images for FD, KID and precision/recall: one rendered scene per sample, meeting that sample's prompt, so the
 * reference has the prompt mix of the samples. Free-text prompts (no world spec) have no real counterpart. A second,
 * independent real set of the same size and mix is embedded too: its distance to the first is the noise floor of
 * FD and KID at the run's own N (src/stats).
 */
function referenceImages(
  config: SweepConfig,
  size: number,
  ctx: MetricContext,
): { images: Float32Array[]; observations: ReferenceObservations } | undefined {
  if (!config.metrics.some((m) => m === "fd" || m === "kid" || m === "precision_recall")) return undefined;
  if (!ctx.evalEmbedder) return undefined; // checkMetrics names what is missing
  const render2 = (stream: string) => {
    const images: Float32Array[] = [];
    const promptId: string[] = [];
    for (const s of samplesOf(config)) {
      if (!s.prompt.spec) continue;
      const scene = sceneForSpec(
        s.prompt.spec,
        new Rng(hashSeed(config.seed, stream, s.promptIndex, s.index)),
      );
      images.push(render(scene, size));
      promptId.push(s.prompt.id);
    }
    return { images, promptId };
  };
  const real = render2("real");
  if (real.images.length < 2)
    throw new Error("sweep: fd/kid/precision_recall need prompts from the world (suites or captions)");
  const features = ctx.evalEmbedder.images(real.images, size);
  ctx.reference = { features, promptId: real.promptId };
  const floor = render2("real-floor");
  ctx.featureSpace = `${config.evalClipOpenai ? "OpenAI CLIP" : "eval-CLIP"} ${features[0]!.length}-d`;
  return {
    images: real.images,
    observations: {
      promptId: real.promptId,
      features: flatten(features),
      floor: { promptId: floor.promptId, features: flatten(ctx.evalEmbedder.images(floor.images, size)) },
    },
  };
}

function writeReference(
  config: SweepConfig,
  size: number,
  { images, observations }: NonNullable<ReturnType<typeof referenceImages>>,
  out: string,
  featureSpace: string | undefined,
): void {
  const realDir = join(out, "real");
  mkdirSync(realDir, { recursive: true });
  const g = gridImage(images.slice(0, 64), size, Math.min(config.samplesPerPrompt, 8));
  writeFileSync(join(realDir, "grid.png"), encodePng(g.data, g.width, g.height));
  writeFileSync(
    join(realDir, "info.json"),
    `${JSON.stringify({ source: "world renderer, one scene per sample meeting its prompt", n: images.length, seed: config.seed, features: "evaluation CLIP image embeddings", featureSpace, floor: "a second set of the same size and prompt mix (seed stream real-floor), for the real-vs-real floor" }, null, 2)}\n`,
  );
  writeReferenceObservations(realDir, observations, featureSpace);
}

interface CellOutput {
  images: Float32Array[];
  cost: CostSample[];
  nfe: number;
  seconds: number;
}

async function sampleCell(
  config: SweepConfig,
  cell: Cell,
  strategy: Strategy,
  diffusion: GaussianDiffusion,
  size: number,
  stopping: () => boolean,
): Promise<CellOutput> {
  const { images, cost } = await sampleBatches(
    strategy,
    diffusion,
    {
      items: samplesOf(config),
      batchSize: config.batchSize,
      prompt: (s) => s.prompt.text,
      xT: (batch) => initialNoise(batch, size),
      noise: (batch) => pairedNoise(config, batch),
      // A signal's handler runs in these waits; checking every step, not only every batch, stops a sweep within
      // one model call of SIGTERM (a batch of GLIDE at the sweeps' sizes takes tens of seconds on a CPU).
      beforeBatch: async () => {
        await yieldToEvents();
        if (stopping()) throw new Abandoned();
      },
      betweenSteps: async () => {
        await yieldToEvents();
        if (stopping()) throw new Abandoned();
      },
    },
    samplerOptions(config, cell),
  );
  const seconds = cost.reduce((a, c) => a + c.seconds, 0);
  const n = cost.reduce((a, c) => a + c.images, 0);
  return { images, cost, nfe: cost.reduce((a, c) => a + c.nfe * c.images, 0) / n, seconds };
}

/** The sampler choice of a cell. */
function samplerOptions(config: SweepConfig, cell: Cell) {
  return {
    sampler: cell.sampler,
    steps: cell.steps,
    ...(config.schedule ? { schedule: config.schedule } : {}),
    ...(config.eta !== undefined ? { eta: config.eta } : {}),
  };
}

function isNonEmptyDir(dir: string): boolean {
  return existsSync(dir) && readdirSync(dir).some((f) => f !== LOCK_FILE);
}

/** Lets pending signal handlers and timers run: sampling is synchronous, so without this a signal waits. */
const yieldToEvents = () => new Promise<void>((r) => setImmediate(r));

/**
 * --resume's guard against mixing: the run's provenance (env.json) must equal this session's, key by key. A run
 * from before provenance was recorded cannot be checked and is refused rather than trusted.
 */
/** A run folder `--resume` must not continue: made with another config, other models or other code. */
export class NotResumable extends Error {}

function checkSameConfig(out: string, configPath: string, config: SweepConfig): void {
  const prev = join(out, "config.json");
  if (existsSync(prev) && canonicalJson(JSON.parse(readFileSync(prev, "utf8"))) !== canonicalJson(config)) {
    throw new NotResumable(`--resume: ${out} was made with a different config than ${configPath}`);
  }
}

function checkResumable(out: string, configPath: string, config: SweepConfig, now: Provenance): void {
  if (!existsSync(join(out, "config.json"))) return; // nothing sampled yet: a plain start
  checkSameConfig(out, configPath, config);
  const envPath = join(out, "env.json");
  let was: Provenance | undefined;
  try {
    was = asProvenance((JSON.parse(readFileSync(envPath, "utf8")) as { provenance?: unknown }).provenance);
  } catch {
    was = undefined;
  }
  if (!was) {
    throw new NotResumable(
      `--resume: ${envPath} records no provenance (missing, unreadable, or made before provenance was recorded): its cells cannot be shown to come from the same models and code; start a new --out`,
    );
  }
  const diffs = provenanceDiff(was, now);
  if (diffs.length) {
    throw new NotResumable(
      `--resume: ${out} was made with different inputs than this session has: ${diffs.join("; ")}. Resuming would mix them; start a new --out (or restore what changed)`,
    );
  }
}

/** Step 1 of a sweep: everything checkable before any model loads (config, grid, shard, run folder, metrics). */
interface Plan {
  configPath: string;
  config: SweepConfig;
  source: string;
  runtime: RuntimeChoice | undefined;
  cells: Cell[];
  shard: Shard | undefined;
  /** This shard's cells. */
  mine: Cell[];
  out: string;
  configJson: string;
}

function planRun(configPath: string, opts: SweepOptions): Plan {
  const loaded = loadSweepConfig(configPath);
  const { config, source } = loaded;
  const cells = planCells(config, source);
  checkPrerequisites(config, source);
  const shard = typeof opts.shard === "string" ? parseShard(opts.shard) : opts.shard;
  const mine = shardCells(cells, shard);
  const out = opts.out ?? loaded.out ?? defaultOut(configPath);
  const configJson = resolvedConfigJson(config);
  checkNotLocked(out);
  if (!opts.resume && isNonEmptyDir(out)) {
    throw new Error(`${out} is not empty: pass --resume to continue that run, or choose another --out`);
  }
  // Early and cheap; the full check (provenance too) runs again under the lock, once the models are hashed.
  if (opts.resume) checkSameConfig(out, configPath, config);
  return { configPath, config, source, runtime: loaded.runtime, cells, shard, mine, out, configJson };
}

/** Step 2, once the models are loaded: each cell's strategy and diffusion, checked before anything is written. */
interface Prepared {
  size: number;
  cellDiffusion: (c: Cell) => GaussianDiffusion;
  strategies: Map<string, Strategy>;
  guideNames: ReturnType<typeof guidesUsed>;
  real: ReturnType<typeof referenceImages>;
}

function prepareCells({ config, source, mine }: Plan, models: Loaded): Prepared {
  const size = models.zoo.imageSize;
  const T = models.zoo.info.config.diffusion.steps;
  const tooMany = config.steps.find((k) => k > T);
  if (tooMany !== undefined)
    throw new Error(
      `${source}: steps: ${tooMany} is more than the ${T} diffusion steps the denoiser '${config.models.denoiser}' was trained with (expected 1 to ${T})`,
    );
  const diffusions = new Map<string, GaussianDiffusion>();
  const cellDiffusion = (c: Cell) =>
    samplerDiffusion(samplerOptions(config, c), T, (respacing) => {
      const key = JSON.stringify(respacing);
      let d = diffusions.get(key);
      if (!d) {
        d = models.zoo.diffusion(respacing);
        diffusions.set(key, d);
      }
      return d;
    });
  const strategies = new Map<string, Strategy>();
  for (const c of mine) {
    const bag = { ...models.zoo.models, diffusion: cellDiffusion(c) };
    strategies.set(c.id, buildStrategy(c.strategy, bag, `${source}: strategies.${c.entry}`));
  }
  // Binding encodes the prompts (and maps them to classifier labels), which is where a prompt a strategy
  // cannot serve fails; once per strategy entry here, so that it fails before any cell is sampled.
  const texts = [...new Set(config.prompts.map((p) => p.text))];
  const checked = new Set<number>();
  for (const c of mine) {
    if (checked.has(c.entry)) continue;
    checked.add(c.entry);
    try {
      strategies.get(c.id)!.bind(texts).dispose();
    } catch (e) {
      throw new Error(`${source}: strategies.${c.entry} (${c.strategy.kind}): ${(e as Error).message}`);
    }
  }
  const guideNames = guidesUsed(config.strategies, {
    classifier: config.models.classifier,
    clip: config.models.clip,
    cleanClip: DEFAULT_ZOO.cleanClip,
  });
  const real = referenceImages(config, size, models.ctx);
  try {
    checkMetrics(config.metrics, models.ctx);
  } catch (e) {
    throw new Error(`${source}: metrics: ${(e as Error).message}`);
  }
  return { size, cellDiffusion, strategies, guideNames, real };
}

/**
 * Step 3: the run folder, locked before any write. The folder checks are repeated under the lock: two sweeps
 * started together both pass the early check, but only one gets the lock, and it then sees what the other left.
 */
function lockRunFolder(plan: Plan, opts: SweepOptions, provenance: Provenance) {
  const { out, configPath, config } = plan;
  mkdirSync(out, { recursive: true });
  const lock = acquireLock(out, { force: opts.force ?? false, command: `sweep ${configPath}` });
  try {
    if (opts.resume) checkResumable(out, configPath, config, provenance);
    else if (isNonEmptyDir(out)) {
      throw new Error(`${out} is not empty: pass --resume to continue that run, or choose another --out`);
    }
  } catch (e) {
    lock.release();
    throw e;
  }
  return lock;
}

/** Step 4: config.json, the reference features and env.json (what ran where); returns env for the final update. */
function writeRunFolder(
  plan: Plan,
  prepared: Prepared,
  models: Loaded,
  provenance: Provenance,
  session: { engine: EngineInfo; runtime: Runtime; started: Date },
): Record<string, unknown> {
  const { out, config, shard } = plan;
  mkdirSync(join(out, "cells"), { recursive: true });
  writeAtomic(join(out, "config.json"), plan.configJson);
  if (prepared.real) writeReference(config, prepared.size, prepared.real, out, models.ctx.featureSpace);
  const env: Record<string, unknown> = {
    backend: session.engine.backend,
    backendReason: session.engine.reason,
    runtime: session.runtime,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpus: cpus().length,
    startedAt: session.started.toISOString(),
    out,
    ...(shard ? { shard: `${shard.index}/${shard.count}` } : {}),
    models: config.models,
    gitCommit: provenance.gitCommit,
    gitDirty: provenance.gitDirty,
    provenance,
    guideModels: guideModelNames(config.strategies),
  };
  writeAtomic(join(out, "env.json"), `${JSON.stringify(env, null, 2)}\n`);
  return env;
}

/**
 * Step 5: which cells are finished and which are to sample. A record that does not validate is moved aside (kept,
 * never deleted) and its cell sampled again; a finished record made from other inputs stops the run.
 */
function cellsToDo(plan: Plan, provenance: Provenance, opts: SweepOptions, log: (s: string) => void) {
  const { out, mine } = plan;
  const state = new Map(mine.map((c) => [c.id, readRecord(out, c.id)]));
  const invalid = mine.filter((c) => state.get(c.id)!.state === "invalid");
  for (const c of invalid) {
    const r = state.get(c.id)!;
    const path = join(out, "cells", c.id, "record.json");
    renameSync(path, `${path}.invalid-${Date.now()}`);
    log(`[sweep] ${c.id}: ${r.state === "invalid" ? r.why : ""}; moved aside, sampling it again\n`);
  }
  const foreign = mine.find((c) => {
    const r = state.get(c.id)!;
    return r.state === "finished" && provenanceDiff(asProvenance(r.record.provenance)!, provenance).length;
  });
  if (foreign) {
    const r = state.get(foreign.id)!;
    const diffs =
      r.state === "finished" ? provenanceDiff(asProvenance(r.record.provenance)!, provenance) : [];
    throw new NotResumable(
      `--resume: cell ${foreign.id} was sampled with different inputs: ${diffs.join("; ")}`,
    );
  }
  const skipped = mine.filter((c) => state.get(c.id)!.state === "finished").map((c) => c.id);
  let todo = mine.filter((c) => state.get(c.id)!.state !== "finished");
  if (opts.limit !== undefined) todo = todo.slice(0, opts.limit);
  if (skipped.length) log(`[sweep] resuming: ${skipped.length} cell(s) already finished\n`);
  return { skipped, todo };
}

/**
 * Step 6, per cell: sample, compute the metrics and the guides' own scores, and write the cell (grid, observations,
 * then the record, each atomically). Undefined when the cell was abandoned (a signal): nothing of it is written.
 */
async function runCell(
  plan: Plan,
  prepared: Prepared,
  models: Loaded,
  cell: Cell,
  provenance: Provenance,
  stopped: () => boolean,
): Promise<{ samplingSeconds: number; metricsSeconds: number } | undefined> {
  const { config, out } = plan;
  const { size } = prepared;
  let result: CellOutput;
  try {
    result = await sampleCell(
      config,
      cell,
      prepared.strategies.get(cell.id)!,
      prepared.cellDiffusion(cell),
      size,
      stopped,
    );
  } catch (e) {
    if (e instanceof Abandoned) return undefined;
    throw new Error(`cell ${cell.id}: ${(e as Error).message}`);
  }
  const tm = performance.now();
  const samples = samplesOf(config);
  const m = computeMetrics(
    config.metrics,
    { images: result.images, size, prompts: samples.map((s) => s.prompt), cost: result.cost },
    models.ctx,
  );
  // The guides' own scores per sample (guidance raises them; the oracle says whether that helped).
  const scores = prepared.guideNames.length
    ? guideScores(
        models.zoo,
        models.forwards,
        prepared.guideNames,
        result.images,
        size,
        samples.map((s) => s.prompt.text),
      )
    : undefined;
  const metricSeconds = (performance.now() - tm) / 1000;
  const cellDir = join(out, "cells", cell.id);
  mkdirSync(cellDir, { recursive: true });
  const cols = config.samplesPerPrompt;
  const grid = gridImage(result.images, size, cols);
  writeAtomic(join(cellDir, "grid.png"), encodePng(grid.data, grid.width, grid.height));
  const record = {
    cellId: cell.id,
    strategy: cell.strategy.kind,
    strategyParams: cell.params,
    scale: cell.scale,
    steps: cell.steps,
    sampler: cell.sampler,
    ...(samplerDef(cell.sampler).eta ? { eta: samplerEta(cell.sampler, config.eta) } : {}),
    ...(config.schedule ? { schedule: config.schedule } : {}),
    metrics: m.metrics,
    perPrompt: m.perPrompt,
    nfe: result.nfe,
    secondsPerImage: result.seconds / result.images.length,
    grid: {
      cols,
      n: result.images.length,
      size,
      seeds: samples.map((s) => s.seed),
      prompts: samples.map((s) => s.prompt.text),
    },
    timings: { samplingSeconds: result.seconds, metricsSeconds: metricSeconds },
    provenance,
  };
  // Observations before the record: a cell that exists has everything its metrics are rebuilt from.
  writeCellObservations(
    cellDir,
    scores ? { ...m.observations, guideScores: scores } : m.observations,
    models.ctx.featureSpace,
  );
  // JSON.stringify writes NaN as null, which is the record format's "no value".
  writeAtomic(join(cellDir, "record.json"), `${JSON.stringify(record, null, 2)}\n`);
  return { samplingSeconds: result.seconds, metricsSeconds: metricSeconds };
}

/** Step 7: env.json's timings and stop state, the report rebuilt from the folder, and a summary line. */
function finishRun(
  plan: Plan,
  env: Record<string, unknown>,
  opts: SweepOptions,
  run: {
    finished: string[];
    skipped: string[];
    signal: "SIGINT" | "SIGTERM" | undefined;
    timings: { totalSeconds: number; loadSeconds: number; samplingSeconds: number; metricsSeconds: number };
  },
): SweepResult {
  const { out, mine, shard } = plan;
  const { finished, skipped, signal } = run;
  env.finishedAt = new Date().toISOString();
  env.timings = run.timings;
  env.interrupted = signal !== undefined;
  if (signal) env.signal = signal;
  writeAtomic(join(out, "env.json"), `${JSON.stringify(env, null, 2)}\n`);
  // Stopped by a signal: no report. Rebuilding it reads and bootstraps every cell (measured: 172 s for the
  // 66-cell strategy league on the loaded 2-core machine), and a stop must be prompt; `report OUT` rebuilds it.
  const report = signal
    ? { htmlPath: join(out, "index.html"), csvPath: join(out, "results.csv") }
    : buildReport(out);
  const remaining = mine.filter((c) => readRecord(out, c.id).state !== "finished").map((c) => c.id);
  if (!opts.quiet) {
    process.stdout.write(
      `[sweep] ${finished.length} cell(s) sampled, ${skipped.length} already done, ${remaining.length} left` +
        `${shard ? ` (shard ${shard.index}/${shard.count} of ${plan.cells.length} cells)` : ""} in ${formatDuration(run.timings.totalSeconds)}` +
        `${signal ? ` (stopped by ${signal})` : ""}` +
        `${remaining.length ? " (continue with --resume)" : ""}\n` +
        (signal
          ? `[sweep] report not rebuilt after ${signal}: guidance-lab report ${out}\n`
          : `[sweep] report: ${report.htmlPath}\n`),
    );
  }
  return {
    out,
    cells: mine.map((c) => c.id),
    finished,
    skipped,
    remaining,
    htmlPath: report.htmlPath,
    csvPath: report.csvPath,
    ...(signal ? { interrupted: signal } : {}),
  };
}

/**
 * A sweep: plan and check (planRun), load the models, build and check every cell (prepareCells), lock and write
 * the run folder (lockRunFolder, writeRunFolder), skip what is finished (cellsToDo), sample each remaining cell
 * (runCell), then record the timings and rebuild the report from the folder (finishRun).
 */
export async function runSweep(configPath: string, opts: SweepOptions = {}): Promise<SweepResult> {
  const started = new Date();
  const t0 = performance.now();
  const log = (s: string) => {
    if (!opts.quiet) process.stderr.write(s);
  };

  // Everything checkable without sampling comes first: config, grid, shard, run folder, models, metrics.
  const plan = planRun(configPath, opts);
  const engine = await initEngine(opts.backend, { quiet: opts.quiet ?? false });
  const runtime = await resolveRuntime(opts.runtime ?? plan.runtime ?? "auto", opts.quiet ?? false);
  const tLoad = performance.now();
  const models = loadModels(plan.config, plan.source, runtime);
  const loadSeconds = (performance.now() - tLoad) / 1000;
  const stop: { signal?: "SIGINT" | "SIGTERM" } = {};
  const onSignal = (sig: NodeJS.Signals) => {
    const signal = sig === "SIGINT" ? "SIGINT" : "SIGTERM";
    if (stop.signal) {
      // A second signal: quit now. Finished records are whole (written by rename) and the lock is dropped.
      lock?.release();
      process.exit(signal === "SIGINT" ? 130 : 143);
    }
    stop.signal = signal;
    log(`\n[sweep] ${sig}: abandoning the current cell (its record is not written); again to quit at once\n`);
  };
  let lock: ReturnType<typeof acquireLock> | undefined;
  try {
    const prepared = prepareCells(plan, models);
    const provenance = runProvenance(plan.config);
    lock = lockRunFolder(plan, opts, provenance);
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    const env = writeRunFolder(plan, prepared, models, provenance, { engine, runtime, started });
    const { skipped, todo } = cellsToDo(plan, provenance, opts, log);

    const progress = new Progress("[sweep]", todo.length, 0, 10, process.stderr);
    const finished: string[] = [];
    let sampling = 0;
    let metricsTime = 0;
    for (const cell of todo) {
      await yieldToEvents();
      if (stop.signal) break;
      const t = await runCell(plan, prepared, models, cell, provenance, () => stop.signal !== undefined);
      if (!t) break;
      sampling += t.samplingSeconds;
      metricsTime += t.metricsSeconds;
      finished.push(cell.id);
      if (!opts.quiet) progress.update(finished.length, { cell: cell.id });
      await opts.afterCell?.(cell.id);
    }
    // Stopped early: the bar ends where the sweep did, not at 100%.
    if (!opts.quiet) progress.done({}, finished.length);

    return finishRun(plan, env, opts, {
      finished,
      skipped,
      signal: stop.signal,
      timings: {
        totalSeconds: (performance.now() - t0) / 1000,
        loadSeconds,
        samplingSeconds: sampling,
        metricsSeconds: metricsTime,
      },
    });
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    // The lock first: nothing is written past this point, and freeing the models ends worker threads.
    lock?.release();
    models.dispose();
  }
}

/**
 * Resumes the run in `out` when it can, and otherwise keeps it beside as `<out>.<time>` and starts afresh (`npm
 * start`: one command that always ends with a report, after a pull or a retrained model too). Nothing is lost and
 * nothing is mixed; the folder set aside is named on stderr.
 */
export async function runSweepResumingOrSettingAside(
  configPath: string,
  out: string,
  opts: Omit<SweepOptions, "out" | "resume"> = {},
): Promise<SweepResult & { setAside?: string }> {
  if (!existsSync(join(out, "config.json"))) return runSweep(configPath, { ...opts, out });
  try {
    return await runSweep(configPath, { ...opts, out, resume: true });
  } catch (e) {
    if (!(e instanceof NotResumable)) throw e;
    const aside = `${out}.${new Date().toISOString().replace(/[:.]/g, "-")}`;
    renameSync(out, aside);
    if (!opts.quiet)
      process.stderr.write(
        `[sweep] ${(e as Error).message.split(". ")[0]}\n[sweep] kept as ${aside}; starting afresh\n`,
      );
    return { ...(await runSweep(configPath, { ...opts, out })), setAside: aside };
  }
}
