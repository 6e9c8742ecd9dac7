// `guidance-lab compare DIR`: paired differences between a run's cells (src/report/compare.ts).
import type { Command } from "../options.ts";

export const compareCommand: Command = (y) =>
  y.command(
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
          describe: "METRIC=Δ: samples per cell that would resolve Δ (level 0.05, power 0.8), e.g. fd=0.005",
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
      const { compareRunFolder, formatCompare } = await import("../../report/compare.ts");
      const { result, csvPath, guideCsvPath } = compareRunFolder(argv.dir, {
        ...(argv.pairs ? { pairs: argv.pairs } : {}),
        ...(argv["target-delta"] ? { targets: argv["target-delta"] } : {}),
        ...(argv.b !== undefined ? { b: argv.b } : {}),
        ...(argv.out ? { out: argv.out } : {}),
      });
      process.stdout.write(`${formatCompare(result)}${csvPath}\n${guideCsvPath ? `${guideCsvPath}\n` : ""}`);
    },
  );
