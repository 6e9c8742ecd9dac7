// `guidance-lab explore`: writes the guidance explorer page (src/explore/build.ts).
import { join } from "node:path";
import { initEngine } from "../../core/engine.ts";
import type { Command } from "../options.ts";

export const exploreCommand: Command = (y) =>
  y.command(
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
      const { writeExplorer } = await import("../../explore/build.ts");
      const r = await writeExplorer(argv.out);
      const mb = (b: number) => `${(b / 1e6).toFixed(2)} MB`;
      process.stderr.write(
        `${r.files.map((f) => `${f.name} ${mb(f.bytes)}`).join(", ")}; ${mb(r.total)} in all\n`,
      );
      process.stdout.write(`${join(r.dir, "index.html")}\n`);
    },
  );
