// `npm run bench`: engine micro-benchmarks, then the project's real denoisers on each runtime (ONNX Runtime with 1
// and 2 threads, TensorFlow.js on the active backend): forward ms and GFLOP/s per model and batch size (the zoo's
// denoiser; GLIDE's small golden config at batch 4, 64×64; the full GLIDE base at batch 2 with --full-glide), and
// sampling steps per second per strategy (none, cfg, classifier on the zoo-sized models; cfg on GLIDE small), and the
// zoo recipes' training steps per runtime (TensorFlow.js worker vs the traced step on ONNX Runtime). With
// --compare-torch PATH the official glide-text2im code runs side by side on the same GLIDE config and inputs; with
// --quickstart, the quickstart sweep's wall time on each runtime.
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { createDiffusion } from "../core/diffusion.ts";
import { type Tensor, type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../core/engine.ts";
import { Init } from "../core/layers.ts";
import { defaultGoldenDir } from "../core/paths.ts";
import { labelForPrompt, NUM_CLASSES, PAD_ID, tokenize, VOCAB_SIZE } from "../data/world.ts";
import { EncoderUNet } from "../models/encoder-unet.ts";
import { UNet, type UNetConfig } from "../models/unet.ts";
import type { Conditioning } from "../strategies/strategy.ts";
import { loadRecipe, resolveRecipe } from "../train/recipe.ts";
import {
  classifierConfig,
  classifierModelSchema,
  denoiserModelSchema,
  denoiserUNetConfig,
} from "../train/tasks.ts";
import { benchEngine, formatTable, type Row } from "./engine.ts";
import { benchGlide, glideReference, TORCH_BASE_FORWARD_B2_S } from "./glide.ts";
import { benchQuickstart, quickstartSummary } from "./quickstart.ts";
import { benchForward, benchSampling, load, runtimeSpecs } from "./runtimes.ts";
import { benchStats } from "./stats.ts";
import { type TorchOptions, torchMissing } from "./torch.ts";
import { benchTraining } from "./train.ts";

export interface BenchOptions {
  /** Tiny sizes and no GLIDE (a smoke test). */
  quick?: boolean;
  /** Also the full GLIDE base model (batch 2): ~1.5 GB of weights per copy and minutes on TensorFlow.js. */
  fullGlide?: boolean;
  /** A glide-text2im checkout: run the official code side by side (needs python3 with torch and numpy). */
  compareTorch?: string;
  /** Interpreter for --compare-torch (default python3). */
  python?: string;
  /** Also the quickstart sweep's wall time per runtime (what `npm start` runs; tens of minutes on TensorFlow.js). */
  quickstart?: boolean;
}

async function _timeMs(fn: () => Tensor[], minMs: number, minReps = 2): Promise<number> {
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

/** World prompts → the zoo denoiser's conditioning (as src/models/zoo.ts encodes them). */
function worldEncoder(ctx: number): (prompts: readonly string[]) => Conditioning {
  return (prompts) => {
    const ids = new Int32Array(prompts.length * ctx);
    for (const [i, p] of prompts.entries()) ids.set(tokenize(p, ctx), i * ctx);
    return {
      tokens: tf.tensor2d(ids, [prompts.length, ctx], "int32") as Tensor2D,
      mask: tf.tensor2d(
        Float32Array.from(ids, (id) => (id === PAD_ID ? 0 : 1)),
        [prompts.length, ctx],
      ) as Tensor2D,
    };
  };
}

export async function runBench(opts: BenchOptions = {}): Promise<Row[]> {
  const quick = opts.quick ?? false;
  const minMs = quick ? 50 : 3000;
  const out = (s: string) => process.stdout.write(s);
  out(`machine: ${availableParallelism()} cores, ${load()} at the start\n\n`);
  const rows = await benchEngine({ quick });
  out(`${formatTable(rows)}\n`);
  const { specs, onnxMissing } = await runtimeSpecs();
  if (onnxMissing) out(`\nonnxruntime-node does not load (${onnxMissing}): TensorFlow.js rows only\n`);
  let torch: TorchOptions | undefined;
  if (opts.compareTorch) {
    const t: TorchOptions = { checkout: opts.compareTorch, ...(opts.python ? { python: opts.python } : {}) };
    const missing = torchMissing(t);
    if (missing.length)
      out(`\n--compare-torch: skipped, missing:\n${missing.map((m) => `  - ${m}`).join("\n")}\n`);
    else torch = t;
  }

  // Forwards per model and batch size on each runtime.
  const fwd: Row[] = [];
  const recipe = loadRecipe(resolveRecipe("denoiser"));
  const size = quick ? 16 : recipe.world.size;
  const zooCfg: UNetConfig = denoiserUNetConfig(denoiserModelSchema.parse(recipe.model), size);
  if (zooCfg.text) zooCfg.text.vocabSize = VOCAB_SIZE;
  const init = new Init(1);
  const zoo = new UNet(init, zooCfg);
  const ctx = zooCfg.text?.ctx ?? 16;
  const encode = worldEncoder(ctx);
  const zooDetail = `${(zoo.numParams() / 1e6).toFixed(2)}M params, zoo recipe config`;
  for (const batch of quick ? [2] : [1, 8, 32]) {
    const x = init.normal([batch, size, size, 3], 1) as Tensor4D;
    const t = tf.tensor1d(Array.from({ length: batch }, (_, i) => (i * 997) % 1000)) as Tensor1D;
    const cond = encode(Array.from({ length: batch }, (_, i) => (i % 2 ? "a red circle" : "a blue square")));
    try {
      fwd.push(
        ...benchForward(
          { name: "zoo denoiser", unet: zoo, batch, x, t, cond, detail: zooDetail },
          specs,
          minMs,
        ).rows,
      );
    } finally {
      tf.dispose([x, t, cond.tokens!, cond.mask!]);
    }
  }
  // Training steps of the zoo's recipes on each runtime (the trainer's, data and loss included).
  for (const name of ["denoiser", "noised-clip"]) {
    const r = loadRecipe(resolveRecipe(name));
    fwd.push(
      ...(await benchTraining(quick ? { ...r, world: { ...r.world, size: 16 } } : r, {
        batch: quick ? 2 : r.batchSize,
        minMs,
        onnx: !onnxMissing,
      })),
    );
  }
  out(`\n${formatTable(fwd)}\n`);

  // Sampling steps per second per strategy on the zoo-sized models (random weights: speed does not depend on them).
  const clfRecipe = loadRecipe(resolveRecipe("classifier"));
  const classifier = new EncoderUNet(
    new Init(3),
    classifierConfig(classifierModelSchema.parse(clfRecipe.model), size, NUM_CLASSES),
  );
  const base = recipe.diffusion;
  const sampling = benchSampling(
    {
      name: "zoo",
      unet: zoo,
      models: {
        encode,
        unconditionalPrompt: "",
        classifier,
        classifierLabel: (p) => labelForPrompt(p) ?? 0,
      },
      strategies: [
        { label: "none", config: { kind: "none" } },
        { label: "cfg", config: { kind: "cfg", scale: 3 } },
        { label: "classifier", config: { kind: "classifier", scale: 1, base: { kind: "none" } } },
      ],
      prompts: Array.from({ length: quick ? 2 : 16 }, (_, i) => (i % 2 ? "a red circle" : "a blue square")),
      steps: (spec) => (quick ? 1 : spec.runtime === "tfjs" ? 5 : 10),
      respacing: (n) =>
        createDiffusion({
          schedule: base.schedule,
          steps: base.steps,
          respacing: String(n),
          modelVarType: "learned_range",
        }),
    },
    specs,
  );
  classifier.dispose();
  zoo.dispose();
  out(`\n${formatTable(sampling)}\n`);
  // What the intervals add to a sweep (bootstrap and KID against a quickstart cell's sampling time).
  const stats = benchStats(sampling, quick ? { b: 100, rowSamples: 2 } : { rowSamples: 16 });
  out(`\n${formatTable(stats)}\n`);

  const glide: Row[] = [];
  const golden = defaultGoldenDir();
  if (!quick && existsSync(join(golden, "manifest.json"))) {
    glide.push(...(await benchGlide({ specs, golden, ...(torch ? { torch } : {}) })));
    out(`\n${formatTable(glide)}\n`);
  } else if (!quick) {
    out(`\n(no golden manifest at ${golden}: GLIDE small rows skipped)\n`);
  }
  if (opts.fullGlide) {
    const full = await benchGlide({
      model: "base",
      specs,
      golden,
      minMs: 0,
      steps: 3,
      tfjsSteps: 1,
      ...(torch ? { torch: { ...torch, minSeconds: 0 } } : {}),
    });
    glide.push(...full);
    out(`\n${formatTable(full)}\n`);
  }
  const quickstart = opts.quickstart ? await benchQuickstart() : [];
  if (quickstart.length) out(`\n${formatTable(quickstart)}\n`);
  out(`\n${summary(glide, golden)}${quickstartSummary(quickstart)}`);
  out(`machine: ${load()} at the end\n`);
  return [...rows, ...fwd, ...sampling, ...stats, ...glide, ...quickstart];
}

/** The issue's headline figures: GLIDE forwards and cfg steps per runtime against the official code's. */
function summary(glide: Row[], golden: string): string {
  const ref = glideReference(golden);
  const lines: string[] = [];
  const line = (
    what: string,
    rowsOf: Row[],
    refS: number | undefined,
    refWhat: string,
    unitS: (r: Row) => number,
  ) => {
    if (!rowsOf.length) return;
    // The baseline is the official code's best measured figure (its fastest thread count), else the recorded one.
    const torchRows = rowsOf.filter((r) => r.backend.startsWith("torch"));
    const base = torchRows.length ? Math.min(...torchRows.map(unitS)) : refS;
    const parts = rowsOf.map((r) => {
      const s = unitS(r);
      const mine = !r.backend.startsWith("torch");
      return `${r.backend} ${s.toFixed(3)} s${base !== undefined && mine ? ` (${(base / s).toFixed(2)}x torch's speed)` : ""}`;
    });
    const refNote = refS !== undefined ? `; ${refWhat}: ${refS.toFixed(3)} s` : "";
    lines.push(`${what}: ${parts.join(", ")}${refNote}`);
  };
  const ms = (r: Row) => r.ms / 1000;
  line(
    "GLIDE small forward b4",
    glide.filter((r) => r.name === "GLIDE small forward"),
    ref.forwardS,
    "official code per golden manifest",
    ms,
  );
  line(
    "GLIDE small cfg sampling, per step",
    glide.filter((r) => r.name === "GLIDE small cfg sampling"),
    ref.cfgPerStepS,
    "official code per golden manifest",
    ms,
  );
  line(
    "GLIDE base forward b2",
    glide.filter((r) => r.name === "GLIDE base forward"),
    TORCH_BASE_FORWARD_B2_S,
    "official code per issue 7",
    ms,
  );
  line(
    "GLIDE base cfg sampling, per step",
    glide.filter((r) => r.name === "GLIDE base cfg sampling"),
    undefined,
    "",
    ms,
  );
  return lines.length ? `${lines.join("\n")}\n` : "";
}
