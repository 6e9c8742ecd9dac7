// `guidance-lab report DIR`: results.csv and index.html rebuilt from a run folder (src/report/index.ts).
import type { Command } from "../options.ts";

export const reportCommand: Command = (y) =>
  y.command(
    "report <dir>",
    "Rebuild results.csv and index.html of a finished or merged run folder",
    (y) =>
      y.positional("dir", { type: "string", demandOption: true }).option("out", {
        type: "string",
        describe: "write results.csv and the page there instead (without the sample grids)",
      }),
    async (argv) => {
      const { buildReport } = await import("../../report/index.ts");
      const r = await buildReport(argv.dir, argv.out ? { out: argv.out } : {});
      process.stdout.write(`${r.csvPath}\n${r.htmlPath}\n`);
    },
  );
