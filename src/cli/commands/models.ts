// `guidance-lab models list | evaluate [NAME] | ship NAME --run DIR`: the shipped model zoo (models/).
import { join } from "node:path";
import type { BackendChoice } from "../../core/engine.ts";
import type { RuntimeChoice } from "../../onnx/choice.ts";
import { checkNumberFlags, FLAGS } from "../flags.ts";
import type { Command } from "../options.ts";

/** `models list`: one line per shipped model. */
async function listCommand(): Promise<void> {
  const { listModels, modelsDir } = await import("../../zoo/registry.ts");
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
}

/** `models ship NAME --run DIR [--snapshot STEP]`: a training run's checkpoint becomes models/NAME. */
async function shipCommand(name: string | undefined, run: string | undefined, snapshot: number | undefined) {
  if (!name || !run) throw new Error("models ship NAME --run RUN_DIR: both the name and the run");
  const { checkModelName, modelsDir } = await import("../../zoo/registry.ts");
  checkModelName(name, "models ship");
  const { exportCheckpoint } = await import("../../train/trainer.ts");
  const { writeCard } = await import("../../zoo/card.ts");
  const { step } = exportCheckpoint(run, join(modelsDir(), name), snapshot);
  const card = writeCard(name, modelsDir());
  process.stdout.write(
    `${name}: step ${step} shipped from ${run} → ${card} (then: guidance-lab models evaluate ${name})\n`,
  );
}

interface EvaluateArgs {
  name: string | undefined;
  backend: BackendChoice;
  runtime: RuntimeChoice | undefined;
  renders: number | undefined;
  samplesPerPrompt: number | undefined;
  fdSamples: number | undefined;
  steps: number | undefined;
}

/** `models evaluate [NAME]`: recomputes the cards' figures from the weights (every model without a name). */
async function evaluateCommand(a: EvaluateArgs): Promise<void> {
  const { initEngine } = await import("../../core/engine.ts");
  const { resolveRuntime } = await import("../../onnx/choice.ts");
  const { evaluateModel } = await import("../../zoo/evaluate/index.ts");
  const { writeCard } = await import("../../zoo/card.ts");
  const { listModels, modelsDir } = await import("../../zoo/registry.ts");
  await initEngine(a.backend);
  const runtime = await resolveRuntime(a.runtime);
  const names = a.name ? [a.name] : listModels().map((m) => m.name);
  if (names.length === 0) throw new Error(`no models in ${modelsDir()} to evaluate`);
  for (const name of names) {
    const ev = await evaluateModel(name, {
      runtime,
      ...(a.renders !== undefined ? { renders: a.renders } : {}),
      ...(a.samplesPerPrompt !== undefined ? { samplesPerPrompt: a.samplesPerPrompt } : {}),
      ...(a.fdSamples !== undefined ? { fdSamples: a.fdSamples } : {}),
      ...(a.steps !== undefined ? { steps: a.steps } : {}),
    });
    const card = writeCard(name, modelsDir(), ev);
    process.stdout.write(
      `${name}: ${ev.figures.map((f) => `${f.key}=${f.value.toFixed(4)}`).join(" ")}  → ${card}\n`,
    );
  }
}

export const modelsCommand: Command = (y) =>
  y.command(
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
      if (argv.action === "ship") return shipCommand(argv.name, argv.run, argv.snapshot);
      if (argv.action === "evaluate")
        return evaluateCommand({
          name: argv.name,
          backend: argv.backend,
          runtime: argv.runtime,
          renders: argv.renders,
          samplesPerPrompt: argv["samples-per-prompt"],
          fdSamples: argv["fd-samples"],
          steps: argv.steps,
        });
      return listCommand();
    },
  );
