// The guidance-lab command line as a yargs parser: the options every command takes, then each command (one module
// each in ./commands/). main.ts runs it on process.argv; tests run it in-process (`--help` of every command).
import yargs from "yargs";
import { benchCommand } from "./commands/bench.ts";
import { compareCommand } from "./commands/compare.ts";
import { exploreCommand } from "./commands/explore.ts";
import { glideCommand } from "./commands/glide.ts";
import { mergeCommand } from "./commands/merge.ts";
import { modelsCommand } from "./commands/models.ts";
import { reportCommand } from "./commands/report.ts";
import { sampleCommand } from "./commands/sample.ts";
import { serveCommand } from "./commands/serve.ts";
import { startCommand } from "./commands/start.ts";
import { sweepCommand } from "./commands/sweep.ts";
import { trainCommand } from "./commands/train.ts";
import { verifyReferenceCommand } from "./commands/verify-reference.ts";
import { backendOption, type Command, runtimeOption } from "./options.ts";

/** In the order `--help` lists them. */
export const COMMANDS: readonly Command[] = [
  verifyReferenceCommand,
  benchCommand,
  trainCommand,
  modelsCommand,
  sampleCommand,
  glideCommand,
  sweepCommand,
  mergeCommand,
  reportCommand,
  compareCommand,
  exploreCommand,
  serveCommand,
  startCommand,
];

/** The parser for `args` (without the node and script paths). */
export function parser(args: readonly string[]) {
  const y = yargs([...args])
    .scriptName("guidance-lab")
    .strict()
    .demandCommand(1)
    .option("backend", backendOption)
    .option("runtime", runtimeOption);
  return COMMANDS.reduce((p, c) => c(p), y)
    .fail((msg, err, y) => {
      if (err) {
        process.stderr.write(`error: ${err.message}\n`);
        if (process.env.GUIDANCE_LAB_DEBUG) process.stderr.write(`${err.stack}\n`);
      } else {
        process.stderr.write(`${y.help()}\n\nerror: ${msg}\n`);
      }
      process.exit(2);
    })
    .help();
}
