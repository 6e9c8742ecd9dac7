// `guidance-lab train <recipe>`: data-parallel training over worker threads with checkpoints, resume and a loss
// CSV. The run folder holds everything a resumed or audited run needs:
//   recipe.json  loss.csv  ckpt/state.safetensors (+ state.json)  model.safetensors (EMA weights) + config.json
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
import type { Worker } from "node:worker_threads";
import { type BackendChoice, spawnTsWorker } from "../core/engine.ts";
import { readSafetensors, writeSafetensors } from "../models/safetensors.ts";
import { Progress } from "./progress.ts";
import { CONTRASTIVE_TASKS, loadRecipe, type Recipe } from "./recipe.ts";
import type { NamedArrays, WorkerReply, WorkerRequest } from "./worker.ts";

export interface TrainOptions {
  out?: string;
  resume?: boolean;
  workers?: number;
  backend?: BackendChoice;
  /** Stop after this many steps in this invocation (for time-boxed sessions); the run resumes later. */
  maxSteps?: number;
  /** Stop (with a checkpoint) after this many seconds. */
  maxSeconds?: number;
}

class WorkerHandle {
  private pending: ((r: WorkerReply) => void) | undefined;
  private failure: Error | undefined;

  private constructor(private readonly worker: Worker) {
    this.worker.on("message", (r: WorkerReply) => {
      const p = this.pending;
      this.pending = undefined;
      p?.(r);
    });
    this.worker.on("error", (e) => {
      this.failure = e;
      this.pending?.({ type: "error", message: e.stack ?? e.message });
    });
  }

  static async start(): Promise<WorkerHandle> {
    return new WorkerHandle(await spawnTsWorker(new URL("./worker.ts", import.meta.url)));
  }

  request(msg: WorkerRequest, transfer: ArrayBuffer[] = []): Promise<WorkerReply> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.pending = (r) =>
        r.type === "error" ? reject(new Error(`training worker: ${r.message}`)) : resolve(r);
      this.worker.postMessage(msg, transfer);
    });
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

function lrAt(recipe: Recipe, step: number): number {
  const { lr, warmupSteps } = recipe.optim;
  return warmupSteps > 0 ? lr * Math.min(1, (step + 1) / warmupSteps) : lr;
}

/** Writes through a temporary name and renames, so a kill never leaves a half-written file that a resume trusts. */
function atomicWrite(path: string, write: (tmp: string) => void): void {
  const tmp = `${path}.tmp-${process.pid}`;
  write(tmp);
  renameSync(tmp, path);
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
  let state: NamedArrays | undefined;
  if (existsSync(statePath)) {
    if (!opts.resume) {
      throw new Error(
        `${out} already holds a checkpoint: pass --resume to continue it, or choose another --out`,
      );
    }
    const meta = JSON.parse(readFileSync(statePath, "utf8")) as {
      step: number;
      elapsed: number;
      recipe: Recipe;
    };
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
    state = readCheckpointState(ckptDir);
  } else if (existsSync(out) && readdirSync(out).length > 0) {
    throw new Error(`${out} exists and holds no checkpoint to resume: choose an empty or new --out`);
  }
  mkdirSync(ckptDir, { recursive: true });
  writeFileSync(join(out, "recipe.json"), `${JSON.stringify(recipe, null, 2)}\n`);
  const lossCsv = join(out, "loss.csv");
  if (startStep === 0) writeFileSync(lossCsv, "step,loss,lr,grad_norm,seconds\n");
  else truncateCsv(lossCsv, startStep);

  const nWorkers = Math.max(1, Math.min(opts.workers ?? availableParallelism(), recipe.batchSize));
  const backend = opts.backend ?? "auto";
  const startWorkers = async (st: NamedArrays | undefined, at: number) => {
    const ws = await Promise.all(Array.from({ length: nWorkers }, () => WorkerHandle.start()));
    const ready = await Promise.all(
      ws.map((w) => w.request({ type: "init", recipe, backend, state: st, step: at })),
    );
    return { ws, info: ready[0] as Extract<WorkerReply, { type: "ready" }> };
  };
  const started = await startWorkers(state, startStep);
  let workers = started.ws;
  const info = started.info;
  process.stderr.write(
    `[train] ${recipe.name}: ${recipe.task}, ${info.numParams.toLocaleString()} parameters, ${nWorkers} worker(s) on ${info.backend}, step ${startStep}/${recipe.steps}\n`,
  );
  if (nWorkers > 1 && CONTRASTIVE_TASKS.has(recipe.task)) {
    const per = splitBatch(recipe.batchSize, nWorkers);
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
  const checkpoint = async (step: number) => {
    const reply = (await workers[0]!.request({ type: "state" })) as Extract<WorkerReply, { type: "state" }>;
    atomicWrite(join(ckptDir, "state.safetensors"), (tmp) =>
      writeSafetensors(tmp, reply.state, { dtype: "F32" }),
    );
    atomicWrite(statePath, (tmp) =>
      writeFileSync(tmp, `${JSON.stringify({ step, elapsed: seconds(), recipe }, null, 2)}\n`),
    );
  };

  const progress = new Progress(`[train ${recipe.name}]`, recipe.steps, startStep);
  let smooth = Number.NaN;
  let step = startStep;
  const stopAt = Math.min(
    recipe.steps,
    opts.maxSteps !== undefined ? startStep + opts.maxSteps : recipe.steps,
  );
  let restarts = 0;
  try {
    while (step < stopAt && !stopRequested) {
      const bounds = splitBatch(recipe.batchSize, nWorkers);
      let replies: Extract<WorkerReply, { type: "grad" }>[];
      try {
        replies = (await Promise.all(
          workers.map((w, i) => w.request({ type: "grad", step, from: bounds[i]!, to: bounds[i + 1]! })),
        )) as Extract<WorkerReply, { type: "grad" }>[];
      } catch (e) {
        // A worker that dies (e.g. the wasm heap failing an allocation after hours) costs at most the steps since
        // the last checkpoint: restart every replica from it. Examples depend on the step only, so the run stays
        // the run it would have been.
        if (restarts >= MAX_RESTARTS || !existsSync(statePath)) throw e;
        restarts += 1;
        const meta = JSON.parse(readFileSync(statePath, "utf8")) as { step: number };
        process.stderr.write(
          `\n[train] a worker failed at step ${step} (${(e as Error).message.split("\n")[0]}); restarting from the checkpoint at step ${meta.step} (restart ${restarts}/${MAX_RESTARTS})\n`,
        );
        await Promise.all(workers.map((w) => w.close()));
        step = meta.step;
        truncateCsv(lossCsv, step);
        workers = (await startWorkers(readCheckpointState(ckptDir), step)).ws;
        continue;
      }
      const grad = new Float32Array(replies[0]!.grad.length);
      let loss = 0;
      replies.forEach((r, i) => {
        const w = (bounds[i + 1]! - bounds[i]!) / recipe.batchSize;
        for (let j = 0; j < grad.length; j++) grad[j]! += w * r.grad[j]!;
        loss += w * r.loss;
      });
      if (!Number.isFinite(loss)) throw new Error(`loss became ${loss} at step ${step}: lower optim.lr`);
      const lr = lrAt(recipe, step);
      const applied = (await Promise.all(
        workers.map((w) => w.request({ type: "apply", grad: grad.slice(), lr })),
      )) as Extract<WorkerReply, { type: "applied" }>[];
      step += 1;
      smooth = Number.isNaN(smooth) ? loss : 0.98 * smooth + 0.02 * loss;
      appendFileSync(lossCsv, `${step},${loss},${lr},${applied[0]!.gradNorm},${seconds().toFixed(1)}\n`);
      progress.update(step, { loss: smooth, lr });
      if (step % recipe.checkpointEvery === 0) await checkpoint(step);
      if (recipe.snapshots.includes(step)) {
        await exportModel(
          workers[0]!,
          recipe,
          join(out, "snapshots"),
          step,
          seconds(),
          nWorkers,
          `step-${step}`,
        );
      }
      if (opts.maxSeconds !== undefined && (performance.now() - t0) / 1000 > opts.maxSeconds) break;
    }
    await checkpoint(step);
    await exportModel(workers[0]!, recipe, out, step, seconds(), nWorkers);
    progress.update(step, { loss: smooth }, true);
    process.stderr.write(
      `\n[train] ${recipe.name}: step ${step}/${recipe.steps}, checkpoint in ${ckptDir}\n`,
    );
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await Promise.all(workers.map((w) => w.close()));
  }
  return { out, step };
}

/** Model weights for shipping: the EMA weights when the recipe keeps an EMA, with the config beside them. */
async function exportModel(
  w: WorkerHandle,
  recipe: Recipe,
  out: string,
  step: number,
  wall: number,
  workers: number,
  stem = "model",
): Promise<void> {
  mkdirSync(out, { recursive: true });
  const reply = (await w.request({ type: "state" })) as Extract<WorkerReply, { type: "state" }>;
  const weights: NamedArrays = {};
  for (const [k, v] of Object.entries(reply.state)) {
    if (!k.startsWith("model.")) continue;
    const name = k.slice("model.".length);
    weights[name] = reply.state[`optim.ema.${name}`] ?? v;
  }
  atomicWrite(join(out, `${stem}.safetensors`), (tmp) =>
    writeSafetensors(tmp, weights, { dtype: "F16", metadata: { step: String(step) } }),
  );
  atomicWrite(join(out, `${stem}.json`), (tmp) =>
    writeFileSync(
      tmp,
      `${JSON.stringify({ name: recipe.name, task: recipe.task, model: recipe.model, diffusion: recipe.diffusion, world: recipe.world, step, wallSeconds: Math.round(wall), workers }, null, 2)}\n`,
    ),
  );
}

const MAX_RESTARTS = 3;

function readCheckpointState(ckptDir: string): NamedArrays {
  const file = readSafetensors(join(ckptDir, "state.safetensors"));
  try {
    const state: NamedArrays = {};
    for (const name of file.names()) {
      const t = file.get(name);
      state[name] = { data: t.data, shape: t.shape };
    }
    return state;
  } finally {
    file.close();
  }
}

export function splitBatch(batch: number, parts: number): number[] {
  const bounds = [0];
  for (let i = 1; i <= parts; i++) bounds.push(Math.round((batch * i) / parts));
  return bounds;
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
