// The explorer's bench rows, side by side in one run: the zoo denoiser sampled in headless Chromium, 8 images × 25
// DDPM steps under cfg s = 3 (target ≤ 5 s), once from file:// (onnxruntime-web wasm on one thread: a file:// page is
// never cross-origin isolated) and once served by `guidance-lab serve` (COOP/COEP, so threads = cores); then the
// bound: onnxruntime-web's conv roofline measured in that same page (batch-16 3×3 convs at the zoo's channel
// counts, 1 thread and all cores) against the FLOPs of the 25 forwards; beside them the same settings through
// `guidance-lab sample`'s path on onnxruntime-node in this process. Skips, saying why, without Chromium or the zoo.
import { mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { tf } from "../core/engine.ts";
import { seededNoise } from "../core/samplers.ts";
import type { RunResult } from "../explore/app.ts";
import { type ExplorerPage, loadPlaywright, openExplorer, rendererCpuSeconds } from "../explore/browser.ts";
import { explorerMissing, writeExplorer } from "../explore/build.ts";
import type { UNet } from "../nets/unet.ts";
import { onnxUnavailable } from "../onnx/runtime.ts";
import { readImages, respacingFor, sampleGuided, seededXT } from "../pipelines/sampling.ts";
import { buildStrategy } from "../strategies/registry.ts";
import { loadZooModel } from "../zoo/registry.ts";
import { DEFAULT_ZOO, loadZoo } from "../zoo/zoo.ts";
import type { Row } from "./engine.ts";
import { unetFlops } from "./flops.ts";
import { convGraph, convRoofline } from "./roofline.ts";

/** The target for 8 images × 25 steps under cfg in the browser on this CPU. */
export const EXPLORER_TARGET_S = 5;

/** The zoo denoiser's conv layers: (channels, resolution) of its 3×3 convs at each level (32 → 64 → 64). */
const ZOO_CONVS: [number, number][] = [
  [32, 32],
  [64, 16],
  [64, 8],
];

export interface ExplorerBench {
  rows: Row[];
  skipped?: string;
  /** Bench-line summary: the fastest time at the measured roofline per thread count, and whether 5 s is in reach. */
  summary?: string;
}

const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

function sampleRow(name: string, backend: string, n: number, r: RunResult, cpuS?: number): Row {
  const st = r.stats;
  const rest = r.ms - st.forwardMs - st.bodyMs;
  const cpu = cpuS === undefined ? "" : `; renderer CPU ${cpuS.toFixed(2)} s`;
  return {
    name,
    backend,
    value: n / (r.ms / 1000),
    unit: "img/s",
    ms: r.ms,
    detail: `forwards ${s(st.forwardMs)} (${st.forwards} of batch ${2 * n}, ${(st.forwardMs / st.forwards).toFixed(0)} ms each); loop arithmetic ${s(st.bodyMs)} over ${st.runs} replays (${s(st.lastRunMs)} once); readback/drawing ${s(rest)}${cpu}; target ≤ ${EXPLORER_TARGET_S} s`,
  };
}

/**
 * onnxruntime-web's conv roofline in `page` (its threads): each zoo conv shape at batch `b`, run for `gflop` in all,
 * rated by its fastest run (a peak: on a shared machine a run that got its core undisturbed shows the idle rate,
 * while slow runs do not lower it); the best over the shapes.
 */
async function pageRoofline(
  page: ExplorerPage,
  b: number,
  gflop: number,
): Promise<{ rows: Row[]; best: number }> {
  const rows: Row[] = [];
  let best = 0;
  for (const [c, size] of ZOO_CONVS) {
    const flops = 2 * b * c * c * 9 * size * size;
    const reps = Math.max(3, Math.ceil((gflop * 1e9) / flops));
    const g = await page.graph(convGraph(b, c, size), [{ name: "x", dims: [b, c, size, size] }]);
    const ms = (await g.time(reps)).sort((x, y) => x - y);
    await g.release();
    const median = ms[Math.floor(ms.length / 2)]!;
    const gflops = flops / ms[0]! / 1e6;
    best = Math.max(best, gflops);
    rows.push({
      name: "conv3x3 roofline (browser)",
      backend: `ort-web wasm ×${page.threads}`,
      value: gflops,
      unit: "GFLOP/s",
      ms: ms[0]!,
      detail: `one Conv, batch ${b}, ${c}→${c} channels, ${size}x${size}, pads 1; ${(flops / 1e9).toFixed(3)} GFLOP; fastest of ${reps} (median ${median.toFixed(1)} ms, ${(flops / median / 1e6).toFixed(1)} GFLOP/s)`,
    });
  }
  return { rows, best };
}

export async function benchExplorer(opts: { quick?: boolean } = {}): Promise<ExplorerBench> {
  const pw = await loadPlaywright();
  if (typeof pw === "string") return { rows: [], skipped: pw };
  const missing = explorerMissing();
  if (missing) return { rows: [], skipped: missing };
  const n = opts.quick ? 2 : 8;
  const steps = opts.quick ? 3 : 25;
  const settings = { prompt: "a red circle", suite: "", sampler: "ddpm" as const, n, steps, seed: 0 };
  const strategy = { kind: "cfg", scale: 3 };
  const cores = availableParallelism();
  const dir = mkdtempSync(join(tmpdir(), "gl-bench-explorer-"));
  const rows: Row[] = [];
  const bounds: string[] = [];
  // GFLOP of one cfg forward (cond and uncond in one batch of 2n), counted from the built network.
  const { model } = loadZooModel(DEFAULT_ZOO.denoiser);
  const perForward = unetFlops(model as UNet, 2 * n);
  model.dispose();
  const totalGflop = (steps * perForward.total) / 1e9;
  const load0 = loadavg()[0]!;
  try {
    const files = await writeExplorer(dir);
    const pages: { label: string; served: boolean; query: string }[] = [
      { label: "file://, 1 thread", served: false, query: "autorun=0" },
      { label: `served (COOP/COEP), ${cores} threads`, served: true, query: `autorun=0&threads=${cores}` },
    ];
    for (const p of pages) {
      const page = await openExplorer(pw, dir, p.query, { served: p.served });
      try {
        // Warm-up: onnxruntime-web plans its kernels on the first run of a shape.
        await page.run({ ...settings, steps: 2, strategy });
        const cpu0 = rendererCpuSeconds();
        const r = await page.run({ ...settings, strategy });
        const cpu1 = rendererCpuSeconds();
        if (page.errors.length) throw new Error(`explorer bench: ${page.errors.join("; ")}`);
        rows.push(
          sampleRow(
            `explorer: ${n} images × ${steps} steps, cfg (browser, ${p.label})`,
            `ort-web wasm ×${page.threads}`,
            n,
            r,
            cpu0 === undefined || cpu1 === undefined ? undefined : cpu1 - cpu0,
          ),
        );
      } finally {
        await page.close();
      }
    }
    rows.at(-1)!.detail += `; folder ${(files.total / 1e6).toFixed(2)} MB`;
    // The roofline, in the served page so that both thread counts run the page's own runtime setup.
    const boundRow = (what: string, backend: string, rate: number, how: string) => {
      const fastest = (totalGflop / rate) * 1000;
      rows.push({
        name: `bound: ${steps} cfg forwards at ${what}`,
        backend,
        value: rate,
        unit: "GFLOP/s",
        ms: fastest,
        detail: `${totalGflop.toFixed(1)} GFLOP (${steps} × ${(perForward.total / 1e9).toFixed(2)} GFLOP per batch-${2 * n} forward, ${((100 * perForward.conv) / perForward.total).toFixed(0)}% in convs) at ${how}, everything else free: no faster than ${s(fastest)}`,
      });
      bounds.push(`${backend} ≥ ${s(fastest)} (${what})`);
    };
    let perCore = 0;
    for (const threads of [...new Set([1, cores])]) {
      const page = await openExplorer(pw, dir, `autorun=0&threads=${threads}`, { served: true });
      try {
        const roof = await pageRoofline(page, 2 * n, opts.quick ? 0.5 : 5);
        rows.push(...roof.rows);
        if (page.threads === 1) perCore = roof.best;
        boundRow(
          "the measured conv roofline",
          `ort-web wasm ×${page.threads}`,
          roof.best,
          "the fastest conv run's rate",
        );
      } finally {
        await page.close();
      }
    }
    // No thread count can beat every core at one thread's best rate with perfect scaling.
    if (cores > 1 && perCore > 0)
      boundRow(
        `${cores} cores × one thread's roofline`,
        `ort-web wasm ×${cores} (ideal)`,
        cores * perCore,
        `${cores} × ${perCore.toFixed(1)} GFLOP/s (one thread's best conv, scaling perfectly)`,
      );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (!(await onnxUnavailable())) {
    // The same convs natively (onnxruntime-node's MLAS, AVX2 where the CPU has it), one thread: what the wasm
    // build's per-core rate is measured against.
    for (const [c, size] of ZOO_CONVS) {
      const native = convRoofline([{ label: "ort-node ×1", runtime: "onnx", threads: 1 }], {
        batch: 2 * n,
        size,
        widths: [c],
        minMs: opts.quick ? 50 : 1000,
        peak: true,
      });
      rows.push(...native.rows.map((r) => ({ ...r, name: "conv3x3 roofline (native, for scale)" })));
    }
    const zoo = loadZoo({}, undefined, "onnx");
    try {
      const diffusion = zoo.diffusion(respacingFor("ddpm", steps));
      const g = buildStrategy(strategy, { ...zoo.models, diffusion }).bind(Array(n).fill(settings.prompt));
      const once = async () => {
        const xT = seededXT(0, n, zoo.imageSize);
        const t0 = performance.now();
        const { sample } = sampleGuided(diffusion, g, xT, { noise: seededNoise(0) });
        await readImages(sample);
        tf.dispose([sample, xT]);
        return performance.now() - t0;
      };
      await once();
      const ms = await once();
      g.dispose();
      rows.push({
        name: `sample --runtime onnx: ${n} images × ${steps} steps, cfg (Node)`,
        backend: "onnxruntime-node",
        value: n / (ms / 1000),
        unit: "img/s",
        ms,
        detail: "the same settings through the CLI's path in this process, all cores, for scale",
      });
    } finally {
      zoo.dispose();
    }
  }
  const load1 = loadavg()[0]!;
  const summary = `explorer bound (the fastest ${n} × ${steps} cfg can be in this browser): ${bounds.join("; ")}; target ≤ ${EXPLORER_TARGET_S} s; load average ${load0.toFixed(1)} → ${load1.toFixed(1)} on ${cores} cores`;
  return { rows, summary };
}
