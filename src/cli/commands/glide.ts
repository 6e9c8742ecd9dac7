// `guidance-lab glide`: GLIDE text-to-image from converted checkpoints (../glide.ts).
import { join } from "node:path";
import { initEngine } from "../../core/engine.ts";
import { checkNumberFlags, FLAGS } from "../flags.ts";
import { type Command, samplingOptions } from "../options.ts";

export const glideCommand: Command = (y) =>
  y.command(
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
      const { runGlide } = await import("../glide.ts");
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
  );
