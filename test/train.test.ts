import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { initEngine, tf } from "../src/core/engine.ts";
import { readSafetensors } from "../src/nets/safetensors.ts";
import { onnxUnavailable } from "../src/onnx/runtime.ts";
import { loadRecipe, parseRecipe, TASKS } from "../src/train/recipe.ts";
import { buildTask } from "../src/train/tasks.ts";
import { exportCheckpoint, splitBatch, train } from "../src/train/trainer.ts";

const dir = mkdtempSync(join(tmpdir(), "gl-train-"));
const onnxWhy = await onnxUnavailable();
after(() => rmSync(dir, { recursive: true, force: true }));

function recipe(steps: number, extra = ""): string {
  const path = join(dir, `tiny-${steps}-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(
    path,
    `name: tiny
task: denoiser
steps: ${steps}
batchSize: 4
checkpointEvery: 2
optim: { lr: 0.001, warmupSteps: 0, ema: 0.9 }
model: { modelChannels: 32, channelMult: [1, 2], numResBlocks: 1, attentionResolutions: [8], xfWidth: 32, xfLayers: 1, xfHeads: 2 }
world: { size: 16 }
${extra}`,
  );
  return path;
}

/**
 * The two 6-step TensorFlow.js runs of one recipe that several tests read (on 2 workers and on 1), each trained
 * once, by whichever test needs it first: the worker-count check compares them, the ONNX Runtime run follows the
 * first.
 */
const shared = (() => {
  let r: string | undefined;
  const once = (workers: number) => {
    let run: Promise<string> | undefined;
    return () => {
      r ??= recipe(6);
      const out = join(dir, `tfjs-${workers}-workers`);
      run ??= train(r, { out, workers, backend: "wasm", runtime: "tfjs" }).then(() => out);
      return run;
    };
  };
  return { twoWorkers: once(2), oneWorker: once(1), recipe: () => (r ??= recipe(6)) };
})();

const losses = (out: string) =>
  readFileSync(join(out, "loss.csv"), "utf8")
    .trim()
    .split("\n")
    .slice(1)
    .map((l) => Number(l.split(",")[1]));

describe("recipes", () => {
  it("rejects unknown keys and bad values, naming the key and file", () => {
    assert.throws(
      () => parseRecipe({ name: "x", task: "denoiser", steps: 1, batchsize: 3 }, "r.yaml"),
      /r\.yaml.*batchsize/,
    );
    assert.throws(() => parseRecipe({ name: "x", task: "denoiser", steps: -1 }, "r.yaml"), /r\.yaml: steps/);
    assert.throws(() => parseRecipe({ name: "x", task: "painter", steps: 1 }, "r.yaml"), /r\.yaml: task/);
  });

  it("ships recipes that validate and build, each with a finite loss", async () => {
    await initEngine("wasm", { quiet: true });
    const dirZoo = join(import.meta.dirname, "..", "experiments", "zoo");
    const names = readdirSync(dirZoo).filter((f) => f.endsWith(".yaml"));
    assert.deepEqual(
      new Set(names.map((f) => loadRecipe(join(dirZoo, f)).task)),
      new Set(TASKS),
      "a recipe per task",
    );
    for (const f of names) {
      const task = buildTask({ ...loadRecipe(join(dirZoo, f)), world: { size: 16, twoObjects: 0.3 } });
      const before = tf.memory().numTensors;
      const loss = tf.tidy(() => task.loss(0, 0, 2).dataSync()[0]!);
      assert.ok(Number.isFinite(loss) && loss > 0, `${f}: loss ${loss}`);
      assert.equal(tf.memory().numTensors, before, `${f}: no tensor leak`);
      task.dispose();
    }
  });

  it("splits a batch over workers without gaps", () => {
    assert.deepEqual(
      splitBatch(5, 2),
      [0, 2, 5].map((v, i) => (i === 1 ? Math.round(2.5) : v)),
    );
    assert.deepEqual(splitBatch(4, 1), [0, 4]);
  });
});

describe("trainer on TensorFlow.js workers", () => {
  it("lowers the loss, and a resumed run reproduces an uninterrupted one", { timeout: 240_000 }, async () => {
    const straight = await shared.twoWorkers();
    const l = losses(straight);
    assert.equal(l.length, 6);
    assert.ok(l.every(Number.isFinite));

    // Interrupted after 2 steps (as a kill after a checkpoint would leave it), then resumed.
    const split = join(dir, "split");
    const r = shared.recipe();
    await train(r, { out: split, workers: 2, backend: "wasm", runtime: "tfjs", maxSteps: 2 });
    await assert.rejects(train(r, { out: split, workers: 2, backend: "wasm", runtime: "tfjs" }), /--resume/);
    await train(r, { out: split, workers: 2, backend: "wasm", runtime: "tfjs", resume: true });
    assert.deepEqual(losses(split), l);

    // A worker failing mid-run: the trainer restarts every replica from the last checkpoint, same result.
    const crashed = join(dir, "crashed");
    process.env.GUIDANCE_LAB_FAIL_ONCE = `3:${join(dir, "failed-once")}`;
    try {
      await train(r, { out: crashed, workers: 2, backend: "wasm", runtime: "tfjs" });
    } finally {
      delete process.env.GUIDANCE_LAB_FAIL_ONCE;
    }
    assert.ok(readFileSync(join(dir, "failed-once"), "utf8") === "3", "the fault was injected");
    assert.deepEqual(losses(crashed), l);
    const a = readSafetensors(join(straight, "model.safetensors"));
    const b = readSafetensors(join(split, "model.safetensors"));
    for (const name of a.names()) assert.deepEqual(a.get(name).data, b.get(name).data, name);
    a.close();
    b.close();
  });

  it("gives the same losses whatever the number of workers", { timeout: 240_000 }, async () => {
    const [a, b] = [losses(await shared.oneWorker()), losses(await shared.twoWorkers())];
    assert.equal(a.length, 6);
    for (const [i, v] of a.entries()) {
      assert.ok(Math.abs(v - b[i]!) < 1e-4 * Math.max(1, Math.abs(v)), `step ${i + 1}: ${v} vs ${b[i]}`);
    }
  });

  it("overfits one fixed batch (the loss falls)", { timeout: 240_000 }, async () => {
    const out = join(dir, "overfit");
    await train(recipe(30, "fixedBatch: true\n"), { out, workers: 1, backend: "wasm", runtime: "onnx" });
    const l = losses(out);
    const head = (l[0]! + l[1]! + l[2]!) / 3;
    const tail = (l.at(-1)! + l.at(-2)! + l.at(-3)!) / 3;
    assert.ok(tail < 0.7 * head, `loss ${head.toFixed(3)} → ${tail.toFixed(3)}`);
  });
});

describe("trainer on ONNX Runtime", { skip: onnxWhy && `onnxruntime-node cannot load: ${onnxWhy}` }, () => {
  it("follows the TensorFlow.js run, and a resumed run reproduces an uninterrupted one", {
    timeout: 240_000,
  }, async () => {
    // The shared recipe with a snapshot, which changes what is written, not what is trained.
    const r = recipe(6, "snapshots: [3]\n");
    const tfjs = await shared.oneWorker();
    const straight = join(dir, "onnx-straight");
    await train(r, { out: straight, workers: 2, backend: "wasm", runtime: "onnx" });
    const [a, b] = [losses(tfjs), losses(straight)];
    assert.equal(b.length, 6);
    for (const [i, v] of a.entries()) {
      assert.ok(Math.abs(v - b[i]!) < 1e-3 * Math.max(1, Math.abs(v)), `step ${i + 1}: ${v} vs ${b[i]}`);
    }
    const model = JSON.parse(readFileSync(join(straight, "model.json"), "utf8"));
    assert.equal(model.runtime, "onnx");
    assert.equal(model.workers, 1, "one slice: the whole batch in one call");

    const split = join(dir, "onnx-split");
    await train(r, { out: split, workers: 2, backend: "wasm", runtime: "onnx", maxSteps: 2 });
    await train(r, { out: split, workers: 2, backend: "wasm", runtime: "onnx", resume: true });
    assert.deepEqual(losses(split), b);
    const x = readSafetensors(join(straight, "model.safetensors"));
    const y = readSafetensors(join(split, "model.safetensors"));
    for (const name of x.names()) assert.deepEqual(x.get(name).data, y.get(name).data, name);
    y.close();

    // `models ship`: the latest checkpoint as a model folder equals the run's own export at that step.
    const shipped = join(dir, "shipped", "tiny");
    assert.deepEqual(exportCheckpoint(straight, shipped), { step: 6, task: "denoiser" });
    const z = readSafetensors(join(shipped, "model.safetensors"));
    for (const name of x.names()) assert.deepEqual(z.get(name).data, x.get(name).data, name);
    z.close();
    x.close();
    const cfg = JSON.parse(readFileSync(join(shipped, "model.json"), "utf8"));
    assert.equal(cfg.step, 6);
    assert.equal(cfg.runtime, "onnx");
    assert.equal(losses(shipped).length, 6, "the loss curve up to the checkpoint");
    assert.throws(() => exportCheckpoint(join(dir, "no-such-run"), shipped), /no checkpoint/);
    // A snapshot the recipe asked for ships the same way, with the loss curve up to its step.
    const early = join(dir, "shipped", "tiny-early");
    assert.deepEqual(exportCheckpoint(straight, early, 3), { step: 3, task: "denoiser" });
    assert.equal(JSON.parse(readFileSync(join(early, "model.json"), "utf8")).step, 3);
    assert.equal(losses(early).length, 3);
    assert.throws(() => exportCheckpoint(straight, early, 4), /no snapshot at step 4/);
  });

  it("starts a run from an exported model (--init-from): its weights, its step, a fresh optimizer", {
    timeout: 240_000,
  }, async () => {
    const r = recipe(6);
    const first = join(dir, "init-source");
    await train(r, { out: first, workers: 1, backend: "wasm", runtime: "onnx", maxSteps: 3 });
    const next = join(dir, "init-next");
    await train(r, { out: next, workers: 1, backend: "wasm", runtime: "onnx", initFrom: first, maxSteps: 1 });
    const meta = JSON.parse(readFileSync(join(next, "ckpt", "state.json"), "utf8"));
    assert.equal(meta.step, 4, "the step count continues from the export's");
    assert.equal(meta.optimStep, 1, "the optimizer starts over");
    assert.deepEqual(meta.initFrom, { model: first, step: 3 });
    assert.equal(losses(next).length, 4, "the source's loss.csv is carried over");
    // A checkpoint of the run is refused as a start (its folder already holds one), and so is another architecture.
    await assert.rejects(
      train(r, { out: next, workers: 1, backend: "wasm", runtime: "onnx", initFrom: first, resume: true }),
      /--init-from starts a new run/,
    );
    const other = recipe(6);
    writeFileSync(other, readFileSync(other, "utf8").replace("modelChannels: 32", "modelChannels: 64"));
    await assert.rejects(
      train(other, {
        out: join(dir, "init-other"),
        workers: 1,
        backend: "wasm",
        runtime: "onnx",
        initFrom: first,
      }),
      /parameter '.*' has shape/,
    );
    // What the outputs mean may change (ε → v): the parameters are the same, so the weights carry over.
    const v = recipe(6);
    writeFileSync(v, readFileSync(v, "utf8").replace("{ modelChannels", "{ prediction: v, modelChannels"));
    const vOut = join(dir, "init-v");
    await train(v, { out: vOut, workers: 1, backend: "wasm", runtime: "onnx", initFrom: first, maxSteps: 1 });
    assert.equal(JSON.parse(readFileSync(join(vOut, "model.json"), "utf8")).model.prediction, "v");
    assert.ok(losses(vOut).every(Number.isFinite));
  });
});
