// `node --import tsx write-cli.ts DIR [MODELS]`: writes the explorer (build.ts) from a child process, so that
// synchronous callers (report writing) can run its asynchronous build.
import { initEngine } from "../core/engine.ts";
import { writeExplorer } from "./build.ts";

const [dir, models] = process.argv.slice(2);
if (!dir) throw new Error("usage: write-cli.ts DIR [MODELS_DIR]");
await initEngine("cpu", { quiet: true });
await writeExplorer(dir, models);
