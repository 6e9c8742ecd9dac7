// `guidance-lab verify-reference DIR`: this port against reference outputs of the official PyTorch code.
import { initEngine } from "../../core/engine.ts";
import type { Command } from "../options.ts";

export const verifyReferenceCommand: Command = (y) =>
  y.command(
    "verify-reference <dir>",
    "Compare this port against reference outputs of the official PyTorch code",
    (y) =>
      y
        .positional("dir", {
          type: "string",
          demandOption: true,
          describe: "golden directory (manifest.json + sections)",
        })
        .option("section", {
          type: "array",
          string: true,
          describe: "sections to run (default: every known section present)",
        }),
    async (argv) => {
      await initEngine(argv.backend);
      const { verifyReference, formatRows } = await import("../../verify/index.ts");
      const { resolveRuntime } = await import("../../onnx/choice.ts");
      const runtime = await resolveRuntime(argv.runtime ?? "tfjs");
      const result = await verifyReference(argv.dir, argv.section, { runtime });
      process.stdout.write(formatRows(result.rows));
      process.exitCode = result.failed > 0 ? 1 : 0;
    },
  );
