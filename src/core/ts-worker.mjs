// Entry point of worker threads: installs tsx's loader in the worker (Node 20 does not pass the parent's module
// hooks on to workers), then loads the TypeScript module named in workerData.
import { workerData } from "node:worker_threads";
import { register } from "tsx/esm/api";

register();
await import(workerData.__tsModule);
