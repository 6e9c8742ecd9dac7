// `guidance-lab train <recipe>`: training with checkpoints, resume and a loss CSV. The gradients come from a
// GradEngine (src/train/engines.ts: TensorFlow.js worker threads, or the traced step on ONNX Runtime); the
// parameters and the optimizer live here, in one flat buffer. The run folder holds everything a resumed or audited
// run needs:
//   recipe.json  loss.csv  ckpt/state.safetensors (+ state.json)  model.safetensors (EMA weights) + model.json
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  writeFileSync,
} from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { type BackendChoice, initEngine } from "../core/engine.ts";
import { modelsDir } from "../core/paths.ts";
import { readSafetensors, writeSafetensors } from "../nets/safetensors.ts";
import { type RuntimeChoice, resolveRuntime } from "../onnx/choice.ts";
import { Progress } from "../util/progress.ts";
import { Adam, layout, type Slot } from "./adam.ts";
import { type GradEngine, onnxEngine, splitBatch, tfjsEngine } from "./engines.ts";
import { CONTRASTIVE_TASKS, type ExportedConfig, loadRecipe, type Recipe } from "./recipe.ts";
import { buildTask } from "./tasks.ts";
import type { NamedArrays } from "./worker.ts";

export { splitBatch };

export interface TrainOptions {
  out?: string;
  resume?: boolean;
  /** TensorFlow.js worker threads, or ONNX Runtime's threads (default: one per core). */
  workers?: number;
  backend?: BackendChoice;
  /** Where gradients are computed (default auto: ONNX Runtime when onnxruntime-node loads). */
  runtime?: RuntimeChoice;
  /** Stop after this many steps in this invocation (for time-boxed sessions); the run resumes later. */
  maxSteps?: number;
  /** Stop (with a checkpoint) after this many seconds. */
  maxSeconds?: number;
  /**
   * Start a new run from an exported model of the same task and architecture (a models/ name or a folder with
   * model.json + model.safetensors): its weights become the parameters and the EMA, the step count continues from
   * its step, and the optimizer starts fresh (zero moments, its own warm-up), as when a run folder was lost.
   */
  initFrom?: string;
}

/** What state.json records beside the step: the optimizer's own update count and where the run started from. */
interface CheckpointMeta {
  step: number;
  elapsed: number;
  recipe: Recipe;
  /** Adam's update count (bias correction, warm-up); equals `step` unless the run began with --init-from. */
  optimStep?: number;
  initFrom?: { model: string; step: number };
  /** How the session that wrote it computed gradients (absent in checkpoints older than the fields). */
  slices?: number;
  runtime?: string;
}

/** The learning rate of the optimizer's update number `optimStep` (linear warm-up, then constant). */
function lrAt(recipe: Recipe, optimStep: number): number {
  const { lr, warmupSteps } = recipe.optim;
  return warmupSteps > 0 ? lr * Math.min(1, (optimStep + 1) / warmupSteps) : lr;
}

/** Writes through a temporary name and renames, so a kill never leaves a half-written file that a resume trusts. */
function atomicWrite(path: string, write: (tmp: string) => void): void {
  const tmp = `${path}.tmp-${process.pid}`;
  write(tmp);
  renameSync(tmp, path);
}

/** The parameters' named views (`model.<name>`) into the flat buffer. */
function modelState(slots: readonly Slot[], params: Float32Array): NamedArrays {
  const out: NamedArrays = {};
  for (const s of slots)
    out[`model.${s.name}`] = { data: params.subarray(s.offset, s.offset + s.size), shape: s.shape };
  return out;
}

function loadParams(slots: readonly Slot[], state: NamedArrays, into: Float32Array, source: string): void {
  for (const s of slots) {
    const a = state[`model.${s.name}`];
    if (!a) throw new Error(`${source}: parameter '${s.name}' is missing`);
    if (a.shape.join(",") !== s.shape.join(",")) {
      throw new Error(`${source}: parameter '${s.name}' has shape [${a.shape}], expected [${s.shape}]`);
    }
    into.set(a.data, s.offset);
  }
}

export async function train(
  recipePath: string,
  opts: TrainOptions = {},
): Promise<{ out: string; step: number }> {
  const recipe = loadRecipe(recipePath);
  const out = opts.out ?? join("runs", "train", recipe.name);
  const ckptDir = join(out, "ckpt");
  const statePath = join(ckptDir, "state.json");
  let startStep = 0;
  let elapsedBefore = 0;
  let optimStep = 0;
  let initFrom: CheckpointMeta["initFrom"];
  let state: NamedArrays | undefined;
  let stateSource = "";
  const lossCsv = join(out, "loss.csv");
  if (existsSync(statePath)) {
    if (!opts.resume) {
      throw new Error(
        `${out} already holds a checkpoint: pass --resume to continue it, or choose another --out`,
      );
    }
    if (opts.initFrom) {
      throw new Error(
        `${out} already holds a checkpoint: --init-from starts a new run, choose another --out`,
      );
    }
    const { meta, state: arrays } = readCheckpoint(ckptDir);
    if (
      JSON.stringify(meta.recipe.model) !== JSON.stringify(recipe.model) ||
      meta.recipe.task !== recipe.task
    ) {
      throw new Error(
        `${statePath}: the checkpoint was made by a different model or task than ${recipePath}`,
      );
    }
    startStep = meta.step;
    elapsedBefore = meta.elapsed;
    optimStep = meta.optimStep ?? meta.step;
    initFrom = meta.initFrom;
    state = arrays;
    stateSource = join(ckptDir, "state.safetensors");
  } else if (existsSync(out) && readdirSync(out).length > 0) {
    throw new Error(`${out} exists and holds no checkpoint to resume: choose an empty or new --out`);
  } else if (opts.initFrom) {
    const init = initialState(opts.initFrom, recipe);
    startStep = init.step;
    elapsedBefore = init.wallSeconds;
    initFrom = { model: init.dir, step: init.step };
    state = init.state;
    stateSource = join(init.dir, "model.safetensors");
    mkdirSync(out, { recursive: true });
    if (init.lossCsv) writeFileSync(lossCsv, init.lossCsv);
  }
  mkdirSync(ckptDir, { recursive: true });
  writeFileSync(join(out, "recipe.json"), `${JSON.stringify(recipe, null, 2)}\n`);
  if (startStep === 0) writeFileSync(lossCsv, "step,loss,lr,grad_norm,seconds\n");
  else truncateCsv(lossCsv, startStep);

  // This thread builds the model too: its initial weights seed the run, and the ONNX engine traces it.
  const backend = opts.backend ?? "auto";
  await initEngine(backend, { quiet: true });
  const task = buildTask(recipe);
  const named = task.model.namedParameters();
  const slots = layout(named.map(([name, p]) => ({ name, shape: p.shape })));
  const params = new Float32Array(slots.reduce((n, s) => n + s.size, 0));
  if (state) {
    loadParams(slots, state, params, stateSource);
    const known = new Set(slots.map((sl) => `model.${sl.name}`));
    const extra = Object.keys(state).filter((k) => k.startsWith("model.") && !known.has(k));
    if (extra.length) {
      throw new Error(
        `${stateSource}: parameters the recipe's model does not have: ${extra.slice(0, 5).join(", ")}`,
      );
    }
  } else for (const [i, [, p]] of named.entries()) params.set(p.dataSync() as Float32Array, slots[i]!.offset);
  const adam = new Adam(slots, params, recipe.optim);
  if (state) {
    const optim: NamedArrays = {};
    for (const [k, v] of Object.entries(state))
      if (k.startsWith("optim.")) optim[k.slice("optim.".length)] = v;
    adam.load(optim, optimStep, stateSource);
  }

  const runtime = await resolveRuntime(opts.runtime ?? "auto", true);
  const cores = Math.max(1, opts.workers ?? availableParallelism());
  let engine: GradEngine;
  if (runtime === "onnx") {
    engine = await onnxEngine(task, named, slots, recipe, cores, startStep);
  } else {
    task.dispose();
    engine = await tfjsEngine(recipe, backend, Math.min(cores, recipe.batchSize));
  }
  process.stderr.write(
    `[train] ${recipe.name}: ${recipe.task}, ${params.length.toLocaleString()} parameters, gradients on ${engine.describe}, step ${startStep}/${recipe.steps}\n`,
  );
  if (engine.slices > 1 && CONTRASTIVE_TASKS.has(recipe.task)) {
    const per = splitBatch(recipe.batchSize, engine.slices);
    process.stderr.write(
      `[train] note: ${recipe.task} is contrastive; each worker draws its negatives from its own slice (${per[1]! - per[0]!} of ${recipe.batchSize} examples), so results depend on --workers\n`,
    );
  }

  let stopRequested = false;
  const onSignal = () => {
    stopRequested = true;
    process.stderr.write("\n[train] stopping after this step (checkpointing)…\n");
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const t0 = performance.now();
  const seconds = () => elapsedBefore + (performance.now() - t0) / 1000;
  const run = () => ({
    wall: seconds(),
    slices: engine.slices,
    runtime,
    ...(initFrom ? { initFrom } : {}),
  });
  const checkpoint = (step: number) => {
    const optim: NamedArrays = {};
    for (const [k, v] of Object.entries(adam.state())) optim[`optim.${k}`] = v;
    const meta: CheckpointMeta = {
      step,
      elapsed: seconds(),
      recipe,
      optimStep,
      slices: engine.slices,
      runtime,
      ...(initFrom ? { initFrom } : {}),
    };
    // The step travels inside the weights' file too: a kill between the two renames leaves state.json one
    // checkpoint behind, and readCheckpoint trusts the file the arrays came from.
    atomicWrite(join(ckptDir, "state.safetensors"), (tmp) =>
      writeSafetensors(
        tmp,
        { ...modelState(slots, params), ...optim },
        {
          dtype: "F32",
          metadata: { checkpoint: JSON.stringify(meta) },
        },
      ),
    );
    atomicWrite(statePath, (tmp) => writeFileSync(tmp, `${JSON.stringify(meta, null, 2)}\n`));
  };

  const progress = new Progress(`[train ${recipe.name}]`, recipe.steps, startStep);
  let smooth = Number.NaN;
  let step = startStep;
  const stopAt = Math.min(
    recipe.steps,
    opts.maxSteps !== undefined ? startStep + opts.maxSteps : recipe.steps,
  );
  try {
    while (step < stopAt && !stopRequested) {
      const { grad, loss } = await engine.grads(step, params);
      if (!Number.isFinite(loss)) throw new Error(`loss became ${loss} at step ${step}: lower optim.lr`);
      const lr = lrAt(recipe, optimStep);
      const gradNorm = adam.apply(grad, lr);
      step += 1;
      optimStep += 1;
      smooth = Number.isNaN(smooth) ? loss : 0.98 * smooth + 0.02 * loss;
      appendFileSync(lossCsv, `${step},${loss},${lr},${gradNorm},${seconds().toFixed(1)}\n`);
      progress.update(step, { loss: smooth, lr });
      if (step % recipe.checkpointEvery === 0) checkpoint(step);
      if (recipe.snapshots.includes(step)) {
        exportModel(recipe, join(out, "snapshots"), slots, adam, { step, ...run() }, `step-${step}`);
      }
      if (opts.maxSeconds !== undefined && (performance.now() - t0) / 1000 > opts.maxSeconds) break;
    }
    checkpoint(step);
    exportModel(recipe, out, slots, adam, { step, ...run() });
    progress.update(step, { loss: smooth }, true);
    process.stderr.write(
      `\n[train] ${recipe.name}: step ${step}/${recipe.steps}, checkpoint in ${ckptDir}\n`,
    );
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await engine.close();
    if (runtime === "onnx") task.dispose();
  }
  return { out, step };
}

/** What an export records about the run beside the weights. */
interface RunInfo {
  step: number;
  wall: number;
  /** Slices of each batch (TensorFlow.js workers; 1 on ONNX Runtime). */
  slices: number;
  runtime: string;
  initFrom?: CheckpointMeta["initFrom"];
}

/** Model weights for shipping: the EMA weights when the recipe keeps an EMA, with the config beside them. */
function exportModel(
  recipe: Recipe,
  out: string,
  slots: readonly Slot[],
  adam: Adam,
  run: RunInfo,
  stem = "model",
) {
  const weights = adam.ema ?? adam.params;
  const named: NamedArrays = {};
  for (const s of slots)
    named[s.name] = { data: weights.subarray(s.offset, s.offset + s.size), shape: s.shape };
  writeExport(recipe, out, named, run, stem);
}

function writeExport(recipe: Recipe, out: string, weights: NamedArrays, run: RunInfo, stem = "model"): void {
  mkdirSync(out, { recursive: true });
  const { step, wall, slices, runtime, initFrom } = run;
  atomicWrite(join(out, `${stem}.safetensors`), (tmp) =>
    // storage_dtype lets the loader catch tensors relabelled to another dtype of the same size (F16 as BF16),
    // which the header's sizes cannot show (zoo/registry.ts).
    writeSafetensors(tmp, weights, { dtype: "F16", metadata: { step: String(step), storage_dtype: "F16" } }),
  );
  const config = {
    name: recipe.name,
    task: recipe.task,
    model: recipe.model,
    diffusion: recipe.diffusion,
    world: recipe.world,
    step,
    wallSeconds: Math.round(wall),
    // Contrastive losses see negatives from one slice of the batch; `workers` records how many slices there were.
    workers: slices,
    runtime,
    ...(initFrom ? { initFrom } : {}),
  };
  atomicWrite(join(out, `${stem}.json`), (tmp) => writeFileSync(tmp, `${JSON.stringify(config, null, 2)}\n`));
}

/**
 * A run's latest checkpoint as a model folder (`models ship`): its EMA weights (model.safetensors), model.json and
 * the loss curve up to the checkpoint's step, so a long run can be shipped while it continues.
 */
export function exportCheckpoint(
  runDir: string,
  out: string,
  snapshot?: number,
): { step: number; task: Recipe["task"] } {
  if (snapshot !== undefined) return exportSnapshot(runDir, out, snapshot);
  const ckptDir = join(runDir, "ckpt");
  if (!existsSync(join(ckptDir, "state.json"))) {
    throw new Error(`${runDir}: no checkpoint (ckpt/state.json) to ship`);
  }
  const { meta, state } = readCheckpoint(ckptDir);
  const weights: NamedArrays = {};
  for (const [k, v] of Object.entries(state)) {
    if (!k.startsWith("model.")) continue;
    const name = k.slice("model.".length);
    weights[name] = state[`optim.ema.${name}`] ?? v;
  }
  // Checkpoints older than the slices/runtime fields: the run's own export says them, if one was written.
  const exported = join(runDir, "model.json");
  const last = existsSync(exported)
    ? (JSON.parse(readFileSync(exported, "utf8")) as Partial<ExportedConfig>)
    : {};
  writeExport(meta.recipe, out, weights, {
    step: meta.step,
    wall: meta.elapsed,
    slices: meta.slices ?? last.workers ?? 1,
    runtime: meta.runtime ?? last.runtime ?? "unknown",
    ...(meta.initFrom ? { initFrom: meta.initFrom } : {}),
  });
  const csv = join(runDir, "loss.csv");
  if (existsSync(csv)) {
    writeFileSync(join(out, "loss.csv"), readFileSync(csv));
    truncateCsv(join(out, "loss.csv"), meta.step);
  }
  return { step: meta.step, task: meta.recipe.task };
}

/** A snapshot the recipe asked for (snapshots/step-N.*) as a model folder, with the loss curve up to N. */
function exportSnapshot(runDir: string, out: string, step: number): { step: number; task: Recipe["task"] } {
  const stem = join(runDir, "snapshots", `step-${step}`);
  if (!existsSync(`${stem}.json`) || !existsSync(`${stem}.safetensors`)) {
    throw new Error(`${runDir}: no snapshot at step ${step} (snapshots/step-${step}.json and .safetensors)`);
  }
  mkdirSync(out, { recursive: true });
  const config = JSON.parse(readFileSync(`${stem}.json`, "utf8")) as ExportedConfig;
  writeFileSync(join(out, "model.json"), readFileSync(`${stem}.json`));
  writeFileSync(join(out, "model.safetensors"), readFileSync(`${stem}.safetensors`));
  const csv = join(runDir, "loss.csv");
  if (existsSync(csv)) {
    writeFileSync(join(out, "loss.csv"), readFileSync(csv));
    truncateCsv(join(out, "loss.csv"), step);
  }
  return { step, task: config.task };
}

/**
 * A new run's state from an exported model (--init-from): the weights as parameters and EMA, zero Adam moments.
 * The model must come from the same task, world and diffusion as the recipe, with exactly its parameters.
 */
function initialState(
  nameOrDir: string,
  recipe: Recipe,
): { dir: string; step: number; wallSeconds: number; state: NamedArrays; lossCsv?: string } {
  const dir = existsSync(join(nameOrDir, "model.json")) ? nameOrDir : join(modelsDir(), nameOrDir);
  const cfgPath = join(dir, "model.json");
  if (!existsSync(cfgPath)) {
    throw new Error(`--init-from ${nameOrDir}: no model.json there or in ${modelsDir()}`);
  }
  const cfg = JSON.parse(readFileSync(cfgPath, "utf8")) as ExportedConfig;
  // The model block may differ where the parameters do not (e.g. `prediction`, what the output means): the weights
  // must then fit the recipe's model exactly, which loading them checks name by name.
  for (const key of ["task", "world", "diffusion"] as const) {
    if (JSON.stringify(cfg[key]) !== JSON.stringify(recipe[key])) {
      throw new Error(
        `--init-from ${cfgPath}: its ${key} ${JSON.stringify(cfg[key])} differs from the recipe's ${JSON.stringify(recipe[key])}`,
      );
    }
  }
  const file = readSafetensors(join(dir, "model.safetensors"));
  const state: NamedArrays = {};
  try {
    for (const name of file.names()) {
      const t = file.get(name);
      const data = Float32Array.from(t.data);
      state[`model.${name}`] = { data, shape: t.shape };
      state[`optim.ema.${name}`] = { data: data.slice(), shape: t.shape };
      state[`optim.m.${name}`] = { data: new Float32Array(data.length), shape: t.shape };
      state[`optim.v.${name}`] = { data: new Float32Array(data.length), shape: t.shape };
    }
  } finally {
    file.close();
  }
  const csv = join(dir, "loss.csv");
  return {
    dir,
    step: cfg.step,
    wallSeconds: cfg.wallSeconds,
    state,
    ...(existsSync(csv) ? { lossCsv: readFileSync(csv, "utf8") } : {}),
  };
}

/** The checkpoint's arrays and what they are: the metadata written with them, else (older checkpoints) state.json. */
function readCheckpoint(ckptDir: string): { meta: CheckpointMeta; state: NamedArrays } {
  const file = readSafetensors(join(ckptDir, "state.safetensors"));
  try {
    const state: NamedArrays = {};
    for (const name of file.names()) {
      const t = file.get(name);
      state[name] = { data: Float32Array.from(t.data), shape: t.shape };
    }
    const inFile = file.metadata.checkpoint;
    const meta = JSON.parse(inFile ?? readFileSync(join(ckptDir, "state.json"), "utf8")) as CheckpointMeta;
    return { meta, state };
  } finally {
    file.close();
  }
}

function truncateCsv(path: string, step: number): void {
  if (!existsSync(path)) {
    writeFileSync(path, "step,loss,lr,grad_norm,seconds\n");
    return;
  }
  const lines = readFileSync(path, "utf8").trimEnd().split("\n");
  const kept = lines.filter((l, i) => i === 0 || Number(l.split(",")[0]) <= step);
  writeFileSync(path, `${kept.join("\n")}\n`);
}
