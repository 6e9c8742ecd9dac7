// `guidance-lab bench` (`npm run bench`): engine, runtime, sampling and quickstart benchmarks.
import { initEngine } from "../../core/engine.ts";
import type { Command } from "../options.ts";

export const benchCommand: Command = (y) =>
  y.command(
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
        const { benchExplorer } = await import("../../bench/explorer.ts");
        const { formatTable } = await import("../../bench/engine.ts");
        const r = await benchExplorer({ quick: argv.quick });
        process.stdout.write(
          r.rows.length
            ? `${formatTable(r.rows)}\n${r.summary ?? ""}\n`
            : `explorer row skipped: ${r.skipped}\n`,
        );
        return;
      }
      const { runBench } = await import("../../bench/index.ts");
      await runBench({
        quick: argv.quick,
        fullGlide: argv["full-glide"],
        ...(argv["compare-torch"] ? { compareTorch: argv["compare-torch"] } : {}),
        ...(argv.python ? { python: argv.python } : {}),
        quickstart: argv.quickstart,
        noExplorer: !argv.explorer,
      });
    },
  );
