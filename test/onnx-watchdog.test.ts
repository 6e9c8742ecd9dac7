// The ONNX Runtime bridge's watchdog and worker-death handling (src/onnx/runtime.ts), with stand-in workers that
// hang, exit, or answer late (test/helpers/onnx-standin-worker.mjs): a bad worker fails the call with a clear error
// and the process goes on; a process stopped by SIGSTOP does not make a live call look hung.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { OnnxSessions, StallWatch } from "../src/onnx/runtime.ts";

const standIn = new URL("./helpers/onnx-standin-worker.mjs", import.meta.url);

function withStandIn<T>(mode: string, f: () => T): T {
  const before = process.env.ONNX_STANDIN;
  process.env.ONNX_STANDIN = mode;
  try {
    return f();
  } finally {
    if (before === undefined) delete process.env.ONNX_STANDIN;
    else process.env.ONNX_STANDIN = before;
  }
}

describe("onnx bridge watchdog", () => {
  test("counts stalled time only: work restarts it, a stopped process's long slice counts once", () => {
    const w = new StallWatch(10_000);
    assert.equal(w.sliceMs, 1000);
    for (let i = 0; i < 9; i++) assert.equal(w.observe(1000, 0.5), false, "idle slices under the limit");
    assert.equal(w.stalledMs, 9000);
    assert.equal(w.observe(1000, 50), false, "a slice with CPU work is progress");
    assert.equal(w.stalledMs, 0, "progress restarts the count");
    // SIGSTOP for an hour, then SIGCONT: the wait returns after 3.6e6 ms of wall time in which nothing ran.
    assert.equal(w.observe(3_600_000, 0), false, "a stopped process does not trip the watchdog");
    assert.equal(w.stalledMs, 1000);
    for (let i = 0; i < 8; i++) w.observe(1000, 0);
    assert.equal(w.observe(1000, 0), true, "ten idle slices reach the limit");
    assert.equal(new StallWatch(50).sliceMs, 10, "short limits wait in short slices");
  });

  test("a hung worker fails the call with a clear error; the process goes on", () => {
    const host = withStandIn("hang", () => new OnnxSessions({ timeoutMs: 300, workerUrl: standIn }));
    const t0 = performance.now();
    assert.throws(
      () => host.session("unet 4x64x64", () => new Uint8Array(8), 1),
      (e: Error) => {
        assert.match(e.message, /gave no answer to create session 'unet 4x64x64'/, "names the call");
        assert.match(e.message, /\d+\.\d s without the process doing any work/, "says for how long");
        assert.match(e.message, /--resume/, "says what to do");
        return true;
      },
    );
    assert.ok(performance.now() - t0 < 10_000, "gave up near the limit");
    // The worker may still answer the abandoned call, so the host takes no more.
    assert.throws(() => host.session("other", () => new Uint8Array(8), 1), /given up on/);
    host.dispose(50);
  });

  test("a worker that exits during a call fails it at once, naming the exit", () => {
    const host = withStandIn("exit", () => new OnnxSessions({ timeoutMs: 600_000, workerUrl: standIn }));
    const t0 = performance.now();
    assert.throws(
      () => host.session("clip image/8", () => new Uint8Array(8), 1),
      /no answer to create session 'clip image\/8': onnxruntime worker exited \(code 7\)/,
    );
    assert.ok(performance.now() - t0 < 10_000, "did not wait for the watchdog");
    assert.throws(() => host.session("again", () => new Uint8Array(8), 1), /exited \(code 7\)/);
    host.dispose();
  });

  test("a call in flight survives SIGSTOP and SIGCONT longer than the watchdog limit", {
    skip: process.platform === "win32" ? "no SIGSTOP" : false,
    timeout: 60_000,
  }, async () => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", fileURLToPath(new URL("./helpers/onnx-stopped-call.ts", import.meta.url))],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    let err = "";
    child.stderr.on("data", (d) => {
      err += d;
    });
    const calling = new Promise<void>((resolve) =>
      child.stdout.on("data", (d) => {
        out += d;
        if (out.includes("calling")) resolve();
      }),
    );
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    await calling;
    // Stopped 4 s, past the 3 s limit, while its call waits on a worker that answers after 1 s.
    await new Promise((r) => setTimeout(r, 200));
    child.kill("SIGSTOP");
    await new Promise((r) => setTimeout(r, 4000));
    child.kill("SIGCONT");
    const code = await exited;
    assert.equal(code, 0, `child failed: ${out}${err}`);
    assert.match(out, /answered/);
  });
});
