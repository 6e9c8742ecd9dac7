// `guidance-lab start` (`npm start`): the main job on the embedded default (../start.ts).
import { initEngine } from "../../core/engine.ts";
import type { Command } from "../options.ts";

export const startCommand: Command = (y) =>
  y.command(
    "start",
    "Run the main job on the embedded default (the quickstart sweep)",
    (y) => y,
    async (argv) => {
      await initEngine(argv.backend);
      const { start } = await import("../start.ts");
      await start();
    },
  );
