// Child process of the watchdog's SIGSTOP test: one call to a stand-in worker that answers after a second of
// idling, under a 3 s watchdog; the parent stops this process for longer than that while the call waits.
import { OnnxSessions } from "../../src/onnx/runtime.ts";

process.env.ONNX_STANDIN = "slow";
process.env.ONNX_STANDIN_DELAY_MS = "1000";
const host = new OnnxSessions({
  timeoutMs: 3000,
  workerUrl: new URL("./onnx-standin-worker.mjs", import.meta.url),
});
try {
  // A first call while the worker thread boots; the stopped one then waits on an idle process (no CPU progress).
  host.session("warm-up", () => new Uint8Array(8), 1);
  process.stdout.write("calling\n");
  host.session("stand-in", () => new Uint8Array(8), 1);
  process.stdout.write("answered\n");
} catch (e) {
  process.stdout.write(`failed: ${(e as Error).message}\n`);
  process.exitCode = 1;
}
host.dispose();
