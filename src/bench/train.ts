// The zoo's training step per runtime, as `guidance-lab train` runs it: the recipe's task (its data generation,
// loss and backward pass included) on TensorFlow.js with the trainer's fast wasm matMul, and the traced step on
// ONNX Runtime with 1 and 2 threads. The figure is images per second of one gradient (the optimizer update, a few
// ms in JS, is left out), median over repetitions.
import { availableParallelism } from "node:os";
import { tf } from "../core/engine.ts";
import { setWasmMatMul } from "../core/wasm-matmul.ts";
import { layout } from "../train/adam.ts";
import { onnxEngine } from "../train/engines.ts";
import type { Recipe } from "../train/recipe.ts";
import { buildTask } from "../train/tasks.ts";
import type { Row } from "./engine.ts";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export async function benchTraining(
  recipe: Recipe,
  opts: { batch: number; minMs: number; onnx: boolean },
): Promise<Row[]> {
  const r: Recipe = { ...recipe, batchSize: opts.batch };
  const task = buildTask(r);
  const named = task.model.namedParameters();
  const detail = `${recipe.name} recipe, batch ${opts.batch}, ${r.world.size}x${r.world.size}, ${(task.model.numParams() / 1e6).toFixed(2)}M params`;
  const row = (backend: string, times: number[]): Row => {
    const ms = median(times);
    return {
      name: `${recipe.name} train step`,
      backend,
      value: (opts.batch * 1000) / ms,
      unit: "img/s",
      ms,
      detail,
    };
  };
  const rows: Row[] = [];
  // Two warm-up steps: ONNX Runtime's first two runs of a training graph take 4-5× a settled step (its memory
  // arena and kernel caches grow through both; measured 3.4 s, 4.3 s, then 0.77-0.97 s for the zoo denoiser at
  // batch 32), and a median over two timed steps that includes one of them reported that as the step time.
  const repeat = async (fn: (step: number) => Promise<void> | void) => {
    await fn(0);
    await fn(1);
    const times: number[] = [];
    const t0 = performance.now();
    for (let step = 2; times.length < 3 || performance.now() - t0 < opts.minMs; step++) {
      const t = performance.now();
      await fn(step);
      times.push(performance.now() - t);
    }
    return times;
  };
  try {
    const params = named.map(([, p]) => p);
    const wasm = tf.getBackend() === "wasm";
    if (wasm) setWasmMatMul("fast");
    try {
      const times = await repeat((step) => {
        const { value, grads } = tf.variableGrads(() => task.loss(step, 0, opts.batch), params);
        tf.dispose([value, ...Object.values(grads)]);
      });
      rows.push(row(`tfjs-${tf.getBackend()} (one worker)`, times));
    } finally {
      if (wasm) setWasmMatMul("reference");
    }
    if (opts.onnx) {
      const slots = layout(named.map(([name, p]) => ({ name, shape: p.shape })));
      const flat = new Float32Array(slots.reduce((n, s) => n + s.size, 0));
      for (const [i, [, p]] of named.entries()) flat.set(p.dataSync() as Float32Array, slots[i]!.offset);
      for (const threads of [1, Math.min(2, availableParallelism())]) {
        const engine = await onnxEngine(task, named, slots, r, threads, 0);
        try {
          rows.push(row(`onnx x${threads}`, await repeat((step) => engine.grads(step, flat).then(() => {}))));
        } finally {
          await engine.close();
        }
      }
    }
  } finally {
    task.dispose();
  }
  return rows;
}
