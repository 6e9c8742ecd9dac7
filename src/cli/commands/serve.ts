// `guidance-lab serve FOLDER`: an explorer or run folder on localhost, cross-origin isolated (src/explore/serve.ts).
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "../options.ts";

export const serveCommand: Command = (y) =>
  y.command(
    "serve <folder>",
    "Serve an explorer folder or a run folder on localhost, cross-origin isolated, so the explorer samples on every core (file:// gives it one)",
    (y) =>
      y
        .positional("folder", {
          type: "string",
          demandOption: true,
          describe: "explorer folder or run folder",
        })
        .option("port", { type: "number", default: 8021, describe: "port (0: any free one)" })
        .option("host", { type: "string", default: "127.0.0.1", describe: "address to listen on" }),
    async (argv) => {
      const { serveFolder } = await import("../../explore/serve.ts");
      const s = await serveFolder(argv.folder, { port: argv.port, host: argv.host });
      const page = existsSync(join(argv.folder, "explorer", "index.html")) ? `${s.url}explorer/` : s.url;
      process.stderr.write(
        `serving ${argv.folder} with COOP/COEP (cross-origin isolated: onnxruntime-web uses every core); Ctrl-C stops\n`,
      );
      process.stdout.write(`${page}\n`);
      await new Promise<void>((ok) => process.once("SIGINT", () => void s.close().then(ok)));
    },
  );
