// `guidance-lab sample`: images of one prompt from a zoo model under a guidance strategy (../sample.ts).
import { join } from "node:path";
import { initEngine } from "../../core/engine.ts";
import { checkNumberFlags, FLAGS } from "../flags.ts";
import { type Command, samplingOptions } from "../options.ts";

export const sampleCommand: Command = (y) =>
  y.command(
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
      const { runSample } = await import("../sample.ts");
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
  );
