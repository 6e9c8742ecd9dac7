// A stand-in for src/onnx/worker.mjs that misbehaves on purpose (the watchdog tests), chosen by ONNX_STANDIN:
// "hang" never answers and does no work; "exit" is the real worker, whose thread exits while handling a call;
// "slow" answers an empty ok after ONNX_STANDIN_DELAY_MS of its own running time, counted in 100 ms ticks (so a
// stop of the process does not count: it answers some ticks after being continued), doing no work meanwhile.
import { parentPort, workerData } from "node:worker_threads";

const mode = process.env.ONNX_STANDIN;
const flag = new Int32Array(workerData.signal);

if (mode === "hang") parentPort.on("message", () => {});
else if (mode === "exit") {
  await import("../../src/onnx/worker.mjs");
  // Registered after the real worker's listener, so the call is in hand when the thread ends.
  parentPort.on("message", () => process.exit(7));
} else if (mode === "slow") {
  parentPort.on("message", () => {
    let ticks = Number(process.env.ONNX_STANDIN_DELAY_MS) / 100;
    const tick = setInterval(() => {
      if (--ticks > 0) return;
      clearInterval(tick);
      flag[1] = 0;
      Atomics.store(flag, 0, 1);
      Atomics.notify(flag, 0);
    }, 100);
  });
} else throw new Error(`ONNX_STANDIN=${mode}: expected hang, exit or slow`);
