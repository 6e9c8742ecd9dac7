// `guidance-lab merge OUT SHARD...`: shard run folders of one sweep joined into one (src/sweep/merge.ts).
import type { Command } from "../options.ts";

export const mergeCommand: Command = (y) =>
  y.command(
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
      const { mergeRuns } = await import("../../sweep/merge.ts");
      const r = mergeRuns(argv.out, argv.shards, { partial: argv.partial });
      process.stdout.write(`${JSON.stringify(r)}\n`);
    },
  );
