// `npm run bench`: engine micro-benchmarks plus the project's real denoisers (the zoo's denoiser, and GLIDE's
// small golden config at batch 4, 64×64, whose PyTorch timing the golden manifest records), on the active backend.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type Scalar, type Tensor, type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../core/engine.ts";
import { Init } from "../core/layers.ts";
import { defaultGoldenDir } from "../core/paths.ts";
import { VOCAB_SIZE } from "../data/world.ts";
import { UNet, type UNetConfig } from "../models/unet.ts";
import { loadRecipe, resolveRecipe } from "../train/recipe.ts";
import { denoiserModelSchema, denoiserUNetConfig } from "../train/tasks.ts";
import { benchEngine, formatTable, type Row } from "./engine.ts";
import { benchGlide, glideReference } from "./glide.ts";

async function timeMs(fn: () => Tensor[], minMs: number, minReps = 2): Promise<number> {
  const run = async () => {
    const out = fn();
    await Promise.all(out.map((t) => t.data()));
    tf.dispose(out);
  };
  await run(); // warm-up: kernel selection and wasm memory growth
  let reps = 0;
  const t0 = performance.now();
  while (reps < minReps || performance.now() - t0 < minMs) {
    await run();
    reps++;
  }
  return (performance.now() - t0) / reps;
}

async function benchDenoiser(
  name: string,
  cfg: UNetConfig,
  batch: number,
  train: boolean,
  minMs: number,
): Promise<Row[]> {
  const backend = tf.getBackend();
  const init = new Init(1);
  const model = new UNet(init, cfg);
  const s = cfg.imageSize;
  const ctx = cfg.text?.ctx ?? 1;
  const x = init.normal([batch, s, s, 3], 1) as Tensor4D;
  const t = tf.tensor1d(
    Array.from({ length: batch }, (_, i) => (i * 997) % 1000),
    "int32",
  ) as Tensor1D;
  const tokens = tf.zeros([batch, ctx], "int32") as Tensor2D;
  const mask = tf.ones([batch, ctx]) as Tensor2D;
  const rows: Row[] = [];
  const fwdMs = await timeMs(() => [tf.tidy(() => model.forward(x, t, { tokens, mask }))], minMs);
  const detail = `batch ${batch}, ${s}x${s}, ${(model.numParams() / 1e6).toFixed(2)}M params`;
  rows.push({
    name: `${name} forward`,
    backend,
    value: (batch * 1000) / fwdMs,
    unit: "eval/s",
    ms: fwdMs,
    detail,
  });
  if (train) {
    const params = model.parameters();
    const ms = await timeMs(() => {
      const { value, grads } = tf.variableGrads(
        () => tf.mean(tf.square(model.forward(x, t, { tokens, mask }))) as Scalar,
        params,
      );
      return [value, ...Object.values(grads)];
    }, minMs);
    rows.push({ name: `${name} train step`, backend, value: (batch * 1000) / ms, unit: "img/s", ms, detail });
  }
  tf.dispose([x, t, tokens, mask]);
  model.dispose();
  return rows;
}

export async function runBench(opts: { quick?: boolean } = {}): Promise<Row[]> {
  const quick = opts.quick ?? false;
  const minMs = quick ? 50 : 3000;
  const rows = await benchEngine({ quick });
  process.stdout.write(`${formatTable(rows)}\n`);
  const more: Row[] = [];
  const recipe = loadRecipe(resolveRecipe("denoiser"));
  const zoo = denoiserUNetConfig(denoiserModelSchema.parse(recipe.model), quick ? 16 : recipe.world.size);
  if (zoo.text) zoo.text.vocabSize = VOCAB_SIZE;
  more.push(...(await benchDenoiser("zoo denoiser", zoo, quick ? 2 : 16, true, minMs)));
  if (!quick && existsSync(join(defaultGoldenDir(), "manifest.json"))) {
    more.push(...(await benchGlide({ steps: 5 })));
    const ref = glideReference();
    process.stdout.write(`\n${formatTable(more)}\n`);
    process.stdout.write(
      `\nofficial PyTorch code on this 2-core CPU (golden manifest): GLIDE small forward at batch 4 ${ref.forwardS?.toFixed(3) ?? "?"} s, cfg sampling ${ref.cfgPerStepS?.toFixed(3) ?? "?"} s per step\n`,
    );
  } else {
    process.stdout.write(`\n${formatTable(more)}\n`);
  }
  return [...rows, ...more];
}
