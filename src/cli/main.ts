// The command line's entry point (bin/guidance-lab.js, npm start): the parser (./parser.ts) on process.argv.
// Commands import their modules lazily so that `--help` and light commands start instantly.
import { hideBin } from "yargs/helpers";
import { parser } from "./parser.ts";

await parser(hideBin(process.argv)).parseAsync();
