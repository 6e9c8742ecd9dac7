#!/usr/bin/env node
// Runs the TypeScript CLI through tsx so `npx guidance-lab` works from a clone without a build step. In-process
// (tsx's loader registered here, as the worker threads do) rather than in a child: Ctrl-C and SIGTERM reach the
// command itself, which stops cleanly and sets the exit status; a child behind spawnSync was orphaned instead.
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { register } from "tsx/esm/api";

register();
const root = join(dirname(fileURLToPath(import.meta.url)), "..");
await import(pathToFileURL(join(root, "src/cli/main.ts")).href);
