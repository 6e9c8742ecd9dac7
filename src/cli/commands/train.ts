// `guidance-lab train RECIPE`: trains a zoo model from a recipe.
import { checkNumberFlags, FLAGS } from "../flags.ts";
import type { Command } from "../options.ts";

export const trainCommand: Command = (y) =>
  y.command(
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
      const { train } = await import("../../train/trainer.ts");
      const { resolveRecipe } = await import("../../train/recipe.ts");
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
  );
