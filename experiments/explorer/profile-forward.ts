// Where the explorer's forward spends its time (docs/explorer.md, "Speed"): the zoo denoiser's batch-16 export, as
// the page ships it, run by onnxruntime-web's wasm build (the page's binary, here in Node's V8) and by
// onnxruntime-node, one thread each, with ONNX Runtime's own profiler; prints each op type's share of the kernel
// time of the last of 4 runs. Run: npx tsx experiments/explorer/profile-forward.ts
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initEngine } from "../../src/core/engine.ts";
import type { UNet } from "../../src/nets/unet.ts";
import { exportUNet } from "../../src/onnx/export.ts";
import { loadZooModel } from "../../src/zoo/registry.ts";
import { DEFAULT_ZOO } from "../../src/zoo/zoo.ts";

interface TraceEvent {
  cat?: string;
  name: string;
  ts: number;
  dur: number;
  args?: { op_name?: string };
}

await initEngine("wasm", { quiet: true });
const { model } = loadZooModel(DEFAULT_ZOO.denoiser);
const bytes = exportUNet(model as UNet, { batch: "dynamic", halfWeights: true });
model.dispose();
const B = 16;
const ctx = 16;
const require = createRequire(import.meta.url);
const tmp = mkdtempSync(join(tmpdir(), "gl-profile-"));

/** Op type → [µs, count] over the last model_run of a Chrome-trace profile. */
function byOp(events: TraceEvent[]): Map<string, [number, number]> {
  const runs = events.filter((e) => e.name === "model_run");
  const last = runs.at(-1)!;
  const out = new Map<string, [number, number]>();
  for (const e of events) {
    if (e.cat !== "Node" || !e.name.endsWith("_kernel_time")) continue;
    if (e.ts < last.ts || e.ts > last.ts + last.dur) continue;
    const k = e.args?.op_name ?? "?";
    const v = out.get(k) ?? [0, 0];
    out.set(k, [v[0] + e.dur, v[1] + 1]);
  }
  return out;
}

function show(label: string, ops: Map<string, [number, number]>, runMs: number[]): void {
  const total = [...ops.values()].reduce((a, [us]) => a + us, 0);
  process.stdout.write(
    `\n${label}: runs ${runMs.map((m) => m.toFixed(0)).join(", ")} ms; kernels ${(total / 1000).toFixed(0)} ms in the last\n`,
  );
  for (const [op, [us, count]] of [...ops].sort((a, b) => b[1][0] - a[1][0]).slice(0, 10))
    process.stdout.write(
      `  ${op.padEnd(20)} ${(us / 1000).toFixed(1).padStart(8)} ms ${String(count).padStart(4)}× ${((100 * us) / total).toFixed(1).padStart(5)}%\n`,
    );
}

type Ort = typeof import("onnxruntime-common");
async function profile(ort: Ort, options: Record<string, unknown>): Promise<number[]> {
  const session = await ort.InferenceSession.create(bytes, {
    graphOptimizationLevel: "all",
    enableProfiling: true,
    ...options,
  });
  const feeds = {
    x: new ort.Tensor(
      "float32",
      Float32Array.from({ length: B * 32 * 32 * 3 }, (_, i) => Math.sin(i)),
      [B, 32, 32, 3],
    ),
    t: new ort.Tensor("float32", new Float32Array(B).fill(500), [B]),
    tokens: new ort.Tensor("int32", new Int32Array(B * ctx).fill(3), [B, ctx]),
    mask: new ort.Tensor("float32", new Float32Array(B * ctx).fill(1), [B, ctx]),
  };
  const ms: number[] = [];
  for (let i = 0; i < 4; i++) {
    const t0 = performance.now();
    await session.run(feeds);
    ms.push(performance.now() - t0);
  }
  session.endProfiling();
  await session.release();
  return ms;
}

/** The Chrome-trace events in `text` (onnxruntime-web prints them on stdout; onnxruntime-node writes a file). */
const traceOf = (text: string) =>
  JSON.parse(text.slice(text.indexOf("\n[") + 1, text.lastIndexOf("]") + 1)) as TraceEvent[];

if (process.env.PROFILE_WEB_CHILD) {
  // The child: onnxruntime-web's emscripten output goes straight to fd 1, so the parent reads it from the pipe.
  const web = (await import(
    join(require.resolve("onnxruntime-web/wasm").replace(/ort\.wasm\.min\.js$/, ""), "ort.wasm.mjs")
  )) as Ort & { env: { wasm: { numThreads: number } } };
  web.env.wasm.numThreads = 1;
  const ms = await profile(web, { executionProviders: ["wasm"] });
  process.stdout.write(`\nRUNS ${JSON.stringify(ms)}\n`);
} else {
  try {
    const out = execFileSync(process.execPath, process.execArgv.concat(process.argv.slice(1)), {
      env: { ...process.env, PROFILE_WEB_CHILD: "1", GUIDANCE_LAB_QUIET: "1" },
      maxBuffer: 1 << 28,
      stdio: ["ignore", "pipe", "ignore"],
    }).toString();
    const runs = JSON.parse(out.slice(out.lastIndexOf("RUNS ") + 5)) as number[];
    show("onnxruntime-web (wasm, 1 thread)", byOp(traceOf(out.slice(0, out.lastIndexOf("RUNS ")))), runs);
    const node = require("onnxruntime-node") as Ort;
    const ms = await profile(node, {
      executionProviders: ["cpu"],
      intraOpNumThreads: 1,
      profileFilePrefix: join(tmp, "node-prof"),
    });
    const file = readdirSync(tmp).find((f) => f.startsWith("node-prof"))!;
    show("onnxruntime-node (1 thread)", byOp(traceOf(`\n${readFileSync(join(tmp, file), "utf8")}`)), ms);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
