// onnxruntime-node session host for runtime.ts's synchronous bridge. Plain JS (no TypeScript loader needed in the
// worker). Protocol: the main thread posts {kind: "create", id, bytes, threads, spin, data} or {kind: "run", id, feeds, data}; the
// worker writes the result (float32 output, or an error string) into the shared buffer and sets flag[0] = 1 (ok) or
// 2 (error); a worker that exits with a call unanswered sets 3, so the caller fails at once instead of waiting.
import { parentPort, workerData } from "node:worker_threads";

const { signal } = workerData;
const flag = new Int32Array(signal);
const sessions = new Map();

function reply(data, status, payload) {
  // status: 1 ok, 2 error; flag[1] = byte length written.
  const bytes =
    payload instanceof Float32Array
      ? new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength)
      : new TextEncoder().encode(String(payload));
  const out = new Uint8Array(data);
  if (bytes.length > out.length) {
    status = 2;
    const msg = new TextEncoder().encode(
      `onnx worker: result of ${bytes.length} bytes exceeds the ${out.length}-byte buffer`,
    );
    out.set(msg);
    flag[1] = msg.length;
  } else {
    out.set(bytes);
    flag[1] = bytes.length;
  }
  Atomics.store(flag, 0, status);
  Atomics.notify(flag, 0);
}

// The message being handled: answered here if the thread ends before replying (process.exit in a dependency, an
// uncaught error), since the caller blocks on the flag and cannot see the worker's 'exit' event.
let current;
process.on("exit", (code) => {
  if (current) reply(current.data, 3, `onnxruntime worker exited (code ${code}) before answering`);
});

// Imported lazily so that a missing or broken onnxruntime-node is reported to the waiting caller, not a dead worker.
let ort;

parentPort.on("message", async (msg) => {
  current = msg;
  try {
    ort ??= await import("onnxruntime-node");
    if (msg.kind === "create") {
      const s = await ort.InferenceSession.create(msg.bytes, {
        executionProviders: msg.providers,
        intraOpNumThreads: msg.threads,
        extra: { session: { intra_op: { allow_spinning: msg.spin ? "1" : "0" } } },
        interOpNumThreads: 1,
        graphOptimizationLevel: "all",
        logSeverityLevel: 3,
      });
      sessions.set(msg.id, s);
      reply(msg.data, 1, new Float32Array(0));
    } else if (msg.kind === "run") {
      const s = sessions.get(msg.id);
      const feeds = {};
      for (const [name, f] of Object.entries(msg.feeds)) feeds[name] = new ort.Tensor(f.type, f.data, f.dims);
      const res = await s.run(feeds);
      reply(msg.data, 1, res[s.outputNames[0]].data);
    } else if (msg.kind === "release") {
      await sessions.get(msg.id)?.release();
      sessions.delete(msg.id);
      reply(msg.data, 1, new Float32Array(0));
    }
  } catch (e) {
    reply(msg.data, 2, e instanceof Error ? e.message : e);
  }
  current = undefined;
});
