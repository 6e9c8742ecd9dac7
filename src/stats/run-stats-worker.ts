// The second thread of runStats's replicate loop (run-stats.ts replicateAll): rebuilds the prepared run from the
// same input, computes replicates r0 … r1 − 1 into the shared buffer, and signals the caller blocked on Atomics.wait.
import { workerData } from "node:worker_threads";
import { fillReplicates, prepareRunStats, type ReplicateRequest, replicateViews } from "./run-stats.ts";

const { input, r0, r1, replicates, signal } = workerData as ReplicateRequest;
const flag = new Int32Array(signal, 0, 2);
try {
  const p = prepareRunStats(input);
  fillReplicates(p, r0, r1, replicateViews(p, replicates));
  Atomics.store(flag, 0, 1);
} catch (e) {
  const bytes = new TextEncoder().encode(String((e as Error).stack ?? e));
  const n = Math.min(bytes.length, signal.byteLength - 8);
  new Uint8Array(signal, 8, n).set(bytes.subarray(0, n));
  Atomics.store(flag, 1, n);
  Atomics.store(flag, 0, 2);
}
Atomics.notify(flag, 0);
