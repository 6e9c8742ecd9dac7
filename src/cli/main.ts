// The command line: thin yargs commands that parse arguments and call the modules. Modules are imported lazily
// so that `--help` and light commands start instantly.
import { existsSync } from "node:fs";
import { join } from "node:path";
import yargs, { type Argv } from "yargs";
import { hideBin } from "yargs/helpers";
import { BACKENDS, type BackendChoice, initEngine } from "../core/engine.ts";
import { SAMPLER_NAMES } from "../core/samplers/registry.ts";
import { SCHEDULES } from "../core/samplers/sampler.ts";
import { checkNumberFlags, FLAGS } from "./flags.ts";

const backendOption = {
  choices: BACKENDS,
  default: (process.env.GUIDANCE_LAB_BACKEND ?? "auto") as BackendChoice,
  describe: "TensorFlow.js backend (env GUIDANCE_LAB_BACKEND)",
} as const;

/** The options `sample` and `glide` share: the prompt, the strategy and the sampler. */
function samplingOptions<T>(y: Argv<T>) {
  return y
    .option("prompt", { type: "string", demandOption: true })
    .option("strategy", { type: "string", default: "cfg", describe: "strategy kind (see README)" })
    .option("scale", { type: "number", describe: "guidance scale (the strategy's default otherwise)" })
    .option("strategy-config", { type: "string", describe: "YAML/JSON file with a full strategy config" })
    .option("sampler", { choices: SAMPLER_NAMES, default: "ddpm" as const, describe: "sampler (registry)" })
    .option("schedule", {
      choices: SCHEDULES,
      default: "default" as const,
      describe: "timestep / σ schedule (karras, exponential: σ-space samplers only)",
    })
    .option("eta", {
      type: "number",
      describe: "η of ddim (default 0), euler_ancestral and the SDE samplers (default 1)",
    })
    .option("seed", { type: "number", default: 0 });
}

async function main(): Promise<void> {
  await yargs(hideBin(process.argv))
    .scriptName("guidance-lab")
    .strict()
    .demandCommand(1)
    .option("backend", backendOption)
    .option("runtime", {
      choices: ["auto", "onnx", "tfjs"] as const,
      // Only the environment's default here: sample and sweep default to auto (after a sweep config's runtime key),
      // verify-reference to tfjs.
      default: process.env.GUIDANCE_LAB_RUNTIME as "auto" | "onnx" | "tfjs" | undefined,
      describe:
        "where denoiser forwards (sample, sweep, glide) and training steps (train) run: ONNX Runtime or TensorFlow.js (env GUIDANCE_LAB_RUNTIME; default auto, verify-reference tfjs)",
    })
    .command(
      "verify-reference <dir>",
      "Compare this port against reference outputs of the official PyTorch code",
      (y) =>
        y
          .positional("dir", {
            type: "string",
            demandOption: true,
            describe: "golden directory (manifest.json + sections)",
          })
          .option("section", {
            type: "array",
            string: true,
            describe: "sections to run (default: every known section present)",
          }),
      async (argv) => {
        await initEngine(argv.backend);
        const { verifyReference, formatRows } = await import("../verify/index.ts");
        const { resolveRuntime } = await import("../onnx/choice.ts");
        const runtime = await resolveRuntime(argv.runtime ?? "tfjs");
        const result = await verifyReference(argv.dir, argv.section, { runtime });
        process.stdout.write(formatRows(result.rows));
        process.exitCode = result.failed > 0 ? 1 : 0;
      },
    )
    .command(
      "bench",
      "Measure denoiser forwards (ms, GFLOP/s) and sampling steps/s on ONNX Runtime and TensorFlow.js",
      (y) =>
        y
          .option("quick", { type: "boolean", default: false, describe: "tiny sizes (smoke test)" })
          .option("full-glide", {
            type: "boolean",
            default: false,
            describe: "also GLIDE's full base model at batch 2 (~1.5 GB of weights per copy; minutes)",
          })
          .option("compare-torch", {
            type: "string",
            describe: "a glide-text2im checkout (outside this project): time the official code side by side",
          })
          .option("python", {
            type: "string",
            describe: "interpreter with torch for --compare-torch (default python3)",
          })
          .option("quickstart", {
            type: "boolean",
            default: false,
            describe: "also time the quickstart sweep (npm start) on each runtime (tens of minutes on tfjs)",
          })
          .option("explorer", {
            type: "boolean",
            default: true,
            describe:
              "the explorer's row: 8 images × 25 cfg steps in headless Chromium (--no-explorer leaves it out)",
          })
          .option("explorer-only", {
            type: "boolean",
            default: false,
            describe: "only the explorer's rows",
          }),
      async (argv) => {
        await initEngine(argv.backend);
        if (argv["explorer-only"]) {
          const { benchExplorer } = await import("../bench/explorer.ts");
          const { formatTable } = await import("../bench/engine.ts");
          const r = await benchExplorer({ quick: argv.quick });
          process.stdout.write(
            r.rows.length
              ? `${formatTable(r.rows)}\n${r.summary ?? ""}\n`
              : `explorer row skipped: ${r.skipped}\n`,
          );
          return;
        }
        const { runBench } = await import("../bench/index.ts");
        await runBench({
          quick: argv.quick,
          fullGlide: argv["full-glide"],
          ...(argv["compare-torch"] ? { compareTorch: argv["compare-torch"] } : {}),
          ...(argv.python ? { python: argv.python } : {}),
          quickstart: argv.quickstart,
          noExplorer: !argv.explorer,
        });
      },
    )
    .command(
      "train <recipe>",
      "Train a zoo model from a recipe (path, or a name in experiments/zoo/)",
      (y) =>
        y
          .positional("recipe", { type: "string", demandOption: true })
          .option("out", { type: "string", describe: "run folder (default runs/train/<name>)" })
          .option("resume", {
            type: "boolean",
            default: false,
            describe: "continue from the run folder's checkpoint",
          })
          .option("workers", {
            type: "number",
            describe: "TensorFlow.js worker threads, or ONNX Runtime threads (default: one per core)",
          })
          .option("init-from", {
            type: "string",
            describe:
              "start a new run from an exported model of the same architecture (a models/ name or folder): its weights, its step count, a fresh optimizer",
          })
          .option("max-steps", { type: "number", describe: "stop after this many steps in this invocation" })
          .option("max-minutes", {
            type: "number",
            describe: "stop (with a checkpoint) after this many minutes",
          }),
      async (argv) => {
        checkNumberFlags(argv, FLAGS.train);
        const { train } = await import("../train/trainer.ts");
        const { resolveRecipe } = await import("../train/recipe.ts");
        await train(resolveRecipe(argv.recipe), {
          out: argv.out,
          resume: argv.resume,
          workers: argv.workers,
          backend: argv.backend,
          maxSteps: argv["max-steps"],
          runtime: argv.runtime,
          ...(argv["init-from"] ? { initFrom: argv["init-from"] } : {}),
          maxSeconds: argv["max-minutes"] !== undefined ? argv["max-minutes"] * 60 : undefined,
        });
      },
    )
    .command(
      "models <action> [name]",
      "The shipped model zoo (models/): list; evaluate [NAME] (recomputes the model cards' figures); ship NAME --run DIR [--snapshot STEP] (a training run's latest checkpoint, or a snapshot, becomes models/NAME)",
      (y) =>
        y
          .positional("action", { choices: ["list", "evaluate", "ship"] as const, demandOption: true })
          .positional("name", {
            type: "string",
            describe: "evaluate: one model (default: every model); ship: the model's name",
          })
          .option("run", { type: "string", describe: "ship: the run folder (guidance-lab train --out)" })
          .option("snapshot", {
            type: "number",
            describe: "ship: a snapshot the recipe asked for (its step) instead of the latest checkpoint",
          })
          .option("renders", {
            type: "number",
            describe: "evaluate: clean renders per figure (default 1000)",
          })
          .option("samples-per-prompt", {
            type: "number",
            describe:
              "evaluate a denoiser: samples per single-object prompt (default 128; colour suite 1/8 of it)",
          })
          .option("fd-samples", {
            type: "number",
            describe: "evaluate a denoiser: unconditional samples for FD (default 200)",
          })
          .option("steps", { type: "number", describe: "evaluate a denoiser: DDPM steps (default 50)" }),
      async (argv) => {
        checkNumberFlags(argv, FLAGS.models);
        const { checkModelName, listModels, modelsDir } = await import("../zoo/registry.ts");
        if (argv.action === "ship") {
          if (!argv.name || !argv.run)
            throw new Error("models ship NAME --run RUN_DIR: both the name and the run");
          checkModelName(argv.name, "models ship");
          const { exportCheckpoint } = await import("../train/trainer.ts");
          const { writeCard } = await import("../zoo/card.ts");
          const { step } = exportCheckpoint(argv.run, join(modelsDir(), argv.name), argv.snapshot);
          const card = writeCard(argv.name, modelsDir());
          process.stdout.write(
            `${argv.name}: step ${step} shipped from ${argv.run} → ${card} (then: guidance-lab models evaluate ${argv.name})\n`,
          );
          return;
        }
        if (argv.action === "evaluate") {
          const { initEngine } = await import("../core/engine.ts");
          const { resolveRuntime } = await import("../onnx/choice.ts");
          const { evaluateModel } = await import("../zoo/evaluate/index.ts");
          const { writeCard } = await import("../zoo/card.ts");
          await initEngine(argv.backend);
          const runtime = await resolveRuntime(argv.runtime);
          const names = argv.name ? [argv.name] : listModels().map((m) => m.name);
          if (names.length === 0) throw new Error(`no models in ${modelsDir()} to evaluate`);
          for (const name of names) {
            const ev = await evaluateModel(name, {
              runtime,
              ...(argv.renders !== undefined ? { renders: argv.renders } : {}),
              ...(argv["samples-per-prompt"] !== undefined
                ? { samplesPerPrompt: argv["samples-per-prompt"] }
                : {}),
              ...(argv["fd-samples"] !== undefined ? { fdSamples: argv["fd-samples"] } : {}),
              ...(argv.steps !== undefined ? { steps: argv.steps } : {}),
            });
            const card = writeCard(name, modelsDir(), ev);
            process.stdout.write(
              `${name}: ${ev.figures.map((f) => `${f.key}=${f.value.toFixed(4)}`).join(" ")}  → ${card}\n`,
            );
          }
          return;
        }
        const models = listModels();
        if (models.length === 0) {
          process.stdout.write(`no models in ${modelsDir()} yet (train one: guidance-lab train denoiser)\n`);
          return;
        }
        for (const m of models) {
          process.stdout.write(
            `${m.name.padEnd(24)} ${m.task.padEnd(12)} step ${String(m.step).padStart(6)}  ${(m.bytes / 1e6).toFixed(1)} MB  ${(m.wallSeconds / 3600).toFixed(1)} h\n`,
          );
        }
      },
    )
    .command(
      "sample",
      "Sample images of one prompt with a zoo model and a guidance strategy",
      (y) =>
        samplingOptions(y)
          .option("model", {
            type: "string",
            default: "denoiser",
            describe: "zoo denoiser (guidance-lab models list)",
          })
          .option("steps", { type: "number", default: 50 })
          .option("n", { type: "number", default: 8, describe: "number of images" })
          .option("out", { type: "string", default: join("reports", "samples") })
          .option("init-image", {
            type: "string",
            describe: "inpainting/editing: PNG kept where --mask is white",
          })
          .option("mask", {
            type: "string",
            describe: "PNG of the model's size: white = keep, black = generate",
          })
          .option("replace", {
            choices: ["x0", "xt"] as const,
            default: "x0" as const,
            describe: "known-region replacement on the predicted x0 (GLIDE) or on x_t each step",
          })
          .option("guide-model", {
            type: "string",
            describe:
              "the guide of classifier, clip or clean-clip by zoo name (the strategy's model), e.g. noised-clip-500",
          }),
      async (argv) => {
        checkNumberFlags(argv, FLAGS.sample);
        await initEngine(argv.backend);
        const { runSample } = await import("./sample.ts");
        await runSample({
          runtime: argv.runtime,
          model: argv.model,
          prompt: argv.prompt,
          strategy: argv.strategy,
          scale: argv.scale,
          strategyConfig: argv["strategy-config"],
          steps: argv.steps,
          sampler: argv.sampler,
          schedule: argv.schedule,
          eta: argv.eta,
          n: argv.n,
          seed: argv.seed,
          out: argv.out,
          initImage: argv["init-image"],
          mask: argv.mask,
          replace: argv.replace,
          ...(argv["guide-model"] !== undefined ? { guideModel: argv["guide-model"] } : {}),
        });
      },
    )
    .command(
      "glide",
      "GLIDE text-to-image from your converted checkpoints (base, optional upsampler) under a strategy",
      (y) =>
        samplingOptions(y)
          .option("base", {
            type: "string",
            demandOption: true,
            describe: "converted base checkpoint (.safetensors)",
          })
          .option("base-flags", {
            type: "string",
            describe: "JSON of GLIDE flags overriding the base defaults",
          })
          .option("upsampler", { type: "string", describe: "converted upsampler checkpoint (.safetensors)" })
          .option("upsampler-flags", {
            type: "string",
            describe: "JSON of flags overriding the upsampler defaults",
          })
          .option("bpe", {
            type: "string",
            demandOption: true,
            describe: "directory with GPT-2's encoder.json and vocab.bpe (.gz accepted)",
          })
          .option("respacing", {
            type: "string",
            default: "100",
            describe: 'base respacing: "100", "ddim50", ... (σ-space samplers: as many steps as it keeps)',
          })
          .option("upsample-respacing", { type: "string", default: "fast27" })
          .option("n", { type: "number", default: 4, describe: "number of images" })
          .option("out", { type: "string", default: join("reports", "glide") }),
      async (argv) => {
        checkNumberFlags(argv, FLAGS.glide);
        await initEngine(argv.backend);
        const { runGlide } = await import("./glide.ts");
        await runGlide({
          base: argv.base,
          baseFlags: argv["base-flags"],
          upsampler: argv.upsampler,
          upsamplerFlags: argv["upsampler-flags"],
          bpe: argv.bpe,
          prompt: argv.prompt,
          strategy: argv.strategy,
          scale: argv.scale,
          strategyConfig: argv["strategy-config"],
          respacing: argv.respacing,
          upsampleRespacing: argv["upsample-respacing"],
          sampler: argv.sampler,
          schedule: argv.schedule,
          eta: argv.eta,
          n: argv.n,
          seed: argv.seed,
          out: argv.out,
          runtime: argv.runtime,
        });
      },
    )
    .command(
      "sweep <config>",
      "Run a sweep of strategy × scale × steps on paired seeds; resumable and shardable",
      (y) =>
        y
          .positional("config", {
            type: "string",
            demandOption: true,
            describe: "sweep config (configs/*.yaml)",
          })
          .option("out", { type: "string", describe: "run folder (default: the config's out)" })
          .option("resume", { type: "boolean", default: false, describe: "skip cells already finished" })
          .option("shard", {
            type: "string",
            describe: "i/n: run the i-th of n deterministic parts (1-based)",
          })
          .option("force", {
            type: "boolean",
            default: false,
            describe: "take over the run folder's lock when the process that held it is gone",
          }),
      async (argv) => {
        await initEngine(argv.backend);
        const { runSweep } = await import("../sweep/runner.ts");
        const r = await runSweep(argv.config, {
          runtime: argv.runtime,
          out: argv.out,
          resume: argv.resume,
          shard: argv.shard,
          backend: argv.backend,
          force: argv.force,
        });
        process.stdout.write(`${r.htmlPath}\n`);
        // The shell's convention for a process stopped by a signal: 128 + its number (SIGINT 2, SIGTERM 15).
        if (r.interrupted) process.exitCode = r.interrupted === "SIGINT" ? 130 : 143;
      },
    )
    .command(
      "merge <out> <shards..>",
      "Join shard run folders of one sweep into one run folder and rebuild its report",
      (y) =>
        y
          .positional("out", { type: "string", demandOption: true })
          .positional("shards", { type: "string", array: true, demandOption: true })
          .option("partial", {
            type: "boolean",
            default: false,
            describe: "merge even when the shards do not cover every cell of the config",
          }),
      async (argv) => {
        const { mergeRuns } = await import("../sweep/merge.ts");
        const r = mergeRuns(argv.out, argv.shards, { partial: argv.partial });
        process.stdout.write(`${JSON.stringify(r)}\n`);
      },
    )
    .command(
      "report <dir>",
      "Rebuild results.csv and index.html of a finished or merged run folder",
      (y) =>
        y.positional("dir", { type: "string", demandOption: true }).option("out", {
          type: "string",
          describe: "write results.csv and the page there instead (without the sample grids)",
        }),
      async (argv) => {
        const { buildReport } = await import("../report/index.ts");
        const r = await buildReport(argv.dir, argv.out ? { out: argv.out } : {});
        process.stdout.write(`${r.csvPath}\n${r.htmlPath}\n`);
      },
    )
    .command(
      "compare <dir>",
      "Paired differences between cells (Δ, 95% CI, p with Holm) and strategies at matched diversity; writes compare.csv",
      (y) =>
        y
          .positional("dir", { type: "string", demandOption: true, describe: "run folder" })
          .option("pairs", {
            type: "array",
            string: true,
            describe:
              "CELL_A:CELL_B pairs (default: each strategy's best cell vs the others' and the conditional model)",
          })
          .option("target-delta", {
            type: "array",
            string: true,
            describe:
              "METRIC=Δ: samples per cell that would resolve Δ (level 0.05, power 0.8), e.g. fd=0.005",
          })
          .option("b", {
            type: "number",
            describe: "bootstrap replicates (default: the run config's bootstrap.b)",
          })
          .option("out", {
            type: "string",
            describe: "folder for compare.csv and guide-gain.csv (default: the run folder)",
          }),
      async (argv) => {
        const { compareRunFolder, formatCompare } = await import("../report/compare.ts");
        const { result, csvPath, guideCsvPath } = compareRunFolder(argv.dir, {
          ...(argv.pairs ? { pairs: argv.pairs } : {}),
          ...(argv["target-delta"] ? { targets: argv["target-delta"] } : {}),
          ...(argv.b !== undefined ? { b: argv.b } : {}),
          ...(argv.out ? { out: argv.out } : {}),
        });
        process.stdout.write(
          `${formatCompare(result)}${csvPath}\n${guideCsvPath ? `${guideCsvPath}\n` : ""}`,
        );
      },
    )
    .command(
      "explore",
      "Write the guidance explorer: a page that samples the zoo denoiser in the browser (opens from file://)",
      (y) =>
        y.option("out", {
          type: "string",
          default: "reports/explorer",
          describe: "folder for index.html and its runtime and model files",
        }),
      async (argv) => {
        await initEngine(argv.backend);
        const { writeExplorer } = await import("../explore/build.ts");
        const r = await writeExplorer(argv.out);
        const mb = (b: number) => `${(b / 1e6).toFixed(2)} MB`;
        process.stderr.write(
          `${r.files.map((f) => `${f.name} ${mb(f.bytes)}`).join(", ")}; ${mb(r.total)} in all\n`,
        );
        process.stdout.write(`${join(r.dir, "index.html")}\n`);
      },
    )
    .command(
      "serve <folder>",
      "Serve an explorer folder or a run folder on localhost, cross-origin isolated, so the explorer samples on every core (file:// gives it one)",
      (y) =>
        y
          .positional("folder", {
            type: "string",
            demandOption: true,
            describe: "explorer folder or run folder",
          })
          .option("port", { type: "number", default: 8021, describe: "port (0: any free one)" })
          .option("host", { type: "string", default: "127.0.0.1", describe: "address to listen on" }),
      async (argv) => {
        const { serveFolder } = await import("../explore/serve.ts");
        const s = await serveFolder(argv.folder, { port: argv.port, host: argv.host });
        const page = existsSync(join(argv.folder, "explorer", "index.html")) ? `${s.url}explorer/` : s.url;
        process.stderr.write(
          `serving ${argv.folder} with COOP/COEP (cross-origin isolated: onnxruntime-web uses every core); Ctrl-C stops\n`,
        );
        process.stdout.write(`${page}\n`);
        await new Promise<void>((ok) => process.once("SIGINT", () => void s.close().then(ok)));
      },
    )
    .command(
      "start",
      "Run the main job on the embedded default (the quickstart sweep)",
      (y) => y,
      async (argv) => {
        await initEngine(argv.backend);
        const { start } = await import("./start.ts");
        await start();
      },
    )
    .fail((msg, err, y) => {
      if (err) {
        process.stderr.write(`error: ${err.message}\n`);
        if (process.env.GUIDANCE_LAB_DEBUG) process.stderr.write(`${err.stack}\n`);
      } else {
        process.stderr.write(`${y.help()}\n\nerror: ${msg}\n`);
      }
      process.exit(2);
    })
    .help()
    .parseAsync();
}

await main();
