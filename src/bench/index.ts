// `npm run bench`: engine micro-benchmarks plus the project's real denoisers (the zoo's denoiser, and GLIDE's
// small golden config at batch 4, 64×64, whose PyTorch timing the golden manifest records), on the active backend.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type Scalar, type Tensor, type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../core/engine.ts";
import { Init } from "../core/layers.ts";
import { defaultGoldenDir } from "../core/paths.ts";
import { VOCAB_SIZE } from "../data/world.ts";
import { UNet, type UNetConfig } from "../models/unet.ts";
import { loadRecipe, resolveRecipe } from "../train/recipe.ts";
import { denoiserModelSchema, denoiserUNetConfig } from "../train/tasks.ts";
import { benchEngine, formatTable, type Row } from "./engine.ts";

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

/** GLIDE's small golden config (manifest meta.small_glide), with random weights: timing needs no checkpoint. */
export function glideSmallConfig(golden = defaultGoldenDir()): UNetConfig {
  const path = join(golden, "manifest.json");
  const m = existsSync(path)
    ? (JSON.parse(readFileSync(path, "utf8")).meta.small_glide as Record<string, number | string | boolean>)
    : undefined;
  const num = (k: string, d: number) => Number(m?.[k] ?? d);
  const res = String(m?.attention_resolutions ?? "32,16,8")
    .split(",")
    .map(Number);
  return {
    imageSize: num("image_size", 64),
    inChannels: 3,
    modelChannels: num("num_channels", 32),
    outChannels: 6,
    numResBlocks: num("num_res_blocks", 2),
    attentionResolutions: res,
    channelMult: [1, 2, 3, 4],
    numHeads: num("num_heads", 1),
    numHeadChannels: num("num_head_channels", 32),
    numHeadsUpsample: -1,
    useScaleShiftNorm: true,
    resblockUpdown: true,
    useNewAttentionOrder: false,
    text: {
      vocabSize: 50257,
      ctx: num("text_ctx", 128),
      width: num("xf_width", 64),
      layers: num("xf_layers", 2),
      heads: num("xf_heads", 4),
      finalLn: true,
      padding: true,
    },
  };
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
  const fwdMs = await timeMs(() => [model.forward(x, t, { tokens, mask })], minMs);
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
  if (!quick)
    more.push(...(await benchDenoiser("GLIDE small (golden config)", glideSmallConfig(), 4, false, minMs)));
  process.stdout.write(`\n${formatTable(more)}\n`);
  if (!quick) {
    process.stdout.write(
      "\nreference: official PyTorch code, GLIDE small forward at batch 4 on this 2-core CPU: 0.30 s (golden manifest timings)\n",
    );
  }
  return [...rows, ...more];
}
