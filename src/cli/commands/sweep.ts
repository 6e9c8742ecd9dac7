// `guidance-lab sweep CONFIG`: a sweep of strategy × scale × steps on paired seeds (src/sweep/runner.ts).
import { initEngine } from "../../core/engine.ts";
import type { Command } from "../options.ts";

export const sweepCommand: Command = (y) =>
  y.command(
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
      const { runSweep } = await import("../../sweep/runner.ts");
      const r = await runSweep(argv.config, {
        runtime: argv.runtime,
        out: argv.out,
        resume: argv.resume,
        shard: argv.shard,
        backend: argv.backend,
        force: argv.force,
      });
      // The shell's convention for a process stopped by a signal: 128 + its number (SIGINT 2, SIGTERM 15). The
      // report is not rebuilt then, so there is no page to name.
      if (r.interrupted) process.exitCode = r.interrupted === "SIGINT" ? 130 : 143;
      else process.stdout.write(`${r.htmlPath}\n`);
    },
  );
