// Writes the guidance explorer: a folder that opens from file:// and samples the zoo in the browser. Files:
//   index.html       the page (controls, grid, x0 strip) with its config (models, suites) inline
//   explorer.js      app.ts bundled by esbuild with the project's strategies, samplers, rng and tokenizer,
//                    TensorFlow.js (core + cpu backend) and onnxruntime-web's wasm glue
//   ort-wasm.js      onnxruntime-web's wasm binary, gzipped, base64 in a script (file:// pages cannot fetch)
//   model-*.js       each model's ONNX export (src/onnx/export.ts, dynamic batch), gzipped, base64 in a script
// Nothing is fetched: classic <script src> tags are the one way a file:// page may read its neighbours in every
// browser, and DecompressionStream inflates the assets in the page.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { gzipSync } from "node:zlib";
import { SUITE_NAMES, suite } from "../data/suites.ts";
import type { UNet } from "../nets/unet.ts";
import { exportUNet } from "../onnx/export.ts";
import { denoiserModelSchema } from "../train/tasks.ts";
import { loadZooModel, modelsDir } from "../zoo/registry.ts";
import { DEFAULT_ZOO } from "../zoo/zoo.ts";
import type { ExplorerConfig } from "./app.ts";

/**
 * The explorer folder must stay under this many bytes (all files): the wasm runtime is ~5.1 MB of it, each
 * model ~4 MB. A report page carries one copy.
 */
export const SIZE_BUDGET_BYTES = 16_000_000;

const require = createRequire(import.meta.url);

/** onnxruntime-web's wasm glue (ES module) that its pthread workers start from. */
const ORT_GLUE = "ort-wasm-simd-threaded.mjs";

const GRADIENT_NOTE =
  "gradient guides differentiate the noised classifier or CLIP, and src/onnx exports forwards only (no gradient graph), so they cannot run here; use `guidance-lab sample` for them.";

export interface ExplorerFiles {
  dir: string;
  files: { name: string; bytes: number }[];
  total: number;
}

/** Why the explorer cannot be written here (no zoo denoiser, or onnxruntime-web not installed), else undefined. */
export function explorerMissing(models = modelsDir()): string | undefined {
  if (!existsSync(join(models, DEFAULT_ZOO.denoiser, "model.json")))
    return `the zoo's ${DEFAULT_ZOO.denoiser} is not in ${models} (GUIDANCE_LAB_MODELS)`;
  try {
    require.resolve("onnxruntime-web/ort-wasm-simd-threaded.wasm");
  } catch {
    return "onnxruntime-web is not installed (npm ci)";
  }
  return undefined;
}

/** esbuild's bundle of app.ts for the browser, with core/engine.ts replaced by engine-browser.ts. */
export async function bundleExplorer(): Promise<string> {
  const esbuild = await import("esbuild");
  const here = dirname(fileURLToPath(import.meta.url));
  const r = await esbuild.build({
    entryPoints: [join(here, "app.ts")],
    bundle: true,
    write: false,
    format: "iife",
    platform: "browser",
    target: "chrome110",
    minify: true,
    legalComments: "none",
    logLevel: "silent",
    define: { "process.env.NODE_ENV": '"production"' },
    plugins: [
      {
        name: "browser-engine",
        setup(b) {
          const engine = join(here, "..", "core", "engine.ts");
          b.onResolve({ filter: /engine\.ts$/ }, (a) =>
            join(a.resolveDir, a.path) === engine ? { path: join(here, "engine-browser.ts") } : undefined,
          );
        },
      },
    ],
  });
  const js = r.outputFiles[0]?.text;
  if (!js) throw new Error("explorer: esbuild produced no bundle");
  return js;
}

const asset = (name: string, bytes: Uint8Array): string =>
  `(window.GL_ASSETS=window.GL_ASSETS||{})[${JSON.stringify(name)}]="${gzipSync(bytes, { level: 9 }).toString("base64")}";\n`;

function modelEntry(name: string, dir: string) {
  const { info, model } = loadZooModel(name, dir);
  try {
    const unet = model as UNet;
    const prediction = denoiserModelSchema.parse(info.config.model).prediction;
    const bytes = exportUNet(unet, { batch: "dynamic", halfWeights: true });
    return {
      info,
      entry: {
        name,
        asset: `model-${name}`,
        inChannels: unet.config.inChannels,
        outChannels: unet.config.outChannels,
        ctx: unet.config.text?.ctx ?? 16,
        prediction,
      },
      bytes,
    };
  } finally {
    model.dispose();
  }
}

/** Writes the explorer into `dir` from the zoo in `models` (the denoiser, and its early checkpoint when shipped). */
export async function writeExplorer(dir: string, models = modelsDir()): Promise<ExplorerFiles> {
  const missing = explorerMissing(models);
  if (missing) throw new Error(`explorer: ${missing}`);
  mkdirSync(dir, { recursive: true });
  const out: Record<string, string | Uint8Array> = {};
  const den = modelEntry(DEFAULT_ZOO.denoiser, models);
  out[`${den.entry.asset}.js`] = asset(den.entry.asset, den.bytes);
  const config: ExplorerConfig = {
    imageSize: den.info.config.world.size,
    diffusion: { schedule: den.info.config.diffusion.schedule, steps: den.info.config.diffusion.steps },
    models: { denoiser: den.entry },
    suites: Object.fromEntries(SUITE_NAMES.map((n) => [n, suite(n, { n: 16, seed: 0 }).map((p) => p.text)])),
    unavailable: {
      ...Object.fromEntries(
        ["classifier", "classifierLabel", "clip", "clipText", "cleanClip", "cleanClipText"].map((k) => [
          k,
          GRADIENT_NOTE,
        ]),
      ),
      perturbed:
        "they run a perturbed copy of the network (attention or layers changed), one more exported graph of 3.8 MB per perturbation setting, which the page does not ship; use `guidance-lab sample` for them.",
    },
    sizeNote: "",
    ortGlue: ORT_GLUE,
  };
  if (existsSync(join(models, DEFAULT_ZOO.weak, "model.json"))) {
    const weak = modelEntry(DEFAULT_ZOO.weak, models);
    out[`${weak.entry.asset}.js`] = asset(weak.entry.asset, weak.bytes);
    config.models.weak = weak.entry;
  }
  out["ort-wasm.js"] = asset(
    "ort-wasm",
    readFileSync(require.resolve("onnxruntime-web/ort-wasm-simd-threaded.wasm")),
  );
  // Plain, not an asset: a served page imports it as a module for onnxruntime-web's threads (file:// never does).
  out[ORT_GLUE] = readFileSync(require.resolve(`onnxruntime-web/${ORT_GLUE}`));
  out["tfjs-wasm.js"] = asset(
    "tfjs-wasm",
    readFileSync(
      join(dirname(require.resolve("@tensorflow/tfjs-backend-wasm")), "tfjs-backend-wasm-simd.wasm"),
    ),
  );
  out["explorer.js"] = await bundleExplorer();
  const sizeOf = (v: string | Uint8Array) => (typeof v === "string" ? Buffer.byteLength(v) : v.length);
  const assetsBytes = Object.values(out).reduce((a, v) => a + sizeOf(v), 0);
  // The page's own size is small and known only once written; the budget check below includes it.
  config.sizeNote = `${Object.entries(out)
    .map(([n, v]) => `${n} ${(sizeOf(v) / 1e6).toFixed(2)} MB`)
    .join(
      ", ",
    )}; ${(assetsBytes / 1e6).toFixed(2)} MB with the page (budget ${(SIZE_BUDGET_BYTES / 1e6).toFixed(1)} MB).`;
  out["index.html"] = pageHtml(
    config,
    Object.keys(out).filter((n) => n.endsWith(".js")),
  );
  for (const [name, v] of Object.entries(out)) writeFileSync(join(dir, name), v);
  const files = Object.entries(out).map(([name, v]) => ({ name, bytes: sizeOf(v) }));
  const total = files.reduce((a, f) => a + f.bytes, 0);
  if (total > SIZE_BUDGET_BYTES)
    throw new Error(`explorer: ${total} bytes exceed the budget of ${SIZE_BUDGET_BYTES} (${dir})`);
  return { dir, files, total };
}

const CSS = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; padding: 16px; color: #1d2330; background: #fafbfc; }
h1 { font-size: 18px; margin: 0 0 8px; }
.controls { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 8px 16px; margin-bottom: 12px; }
.controls label { display: flex; flex-direction: column; font-size: 12px; color: #555; gap: 2px; }
.controls input[type=text], textarea { font: 13px monospace; }
textarea { width: 100%; box-sizing: border-box; }
canvas { image-rendering: pixelated; background: #222; border: 1px solid #ccc; }
#grid { width: 100%; max-width: 1056px; }
#x0 { width: 100%; max-width: 1056px; }
#status { margin: 8px 0; font-size: 13px; }
.error { color: #b00020; font-weight: 600; }
.note { font-size: 12px; color: #666; }
`;

function pageHtml(config: ExplorerConfig, scripts: string[]): string {
  const json = JSON.stringify(config).replace(/</g, "\\u003c");
  // Assets first so that explorer.js finds them in window.GL_ASSETS.
  const tags = [...scripts.filter((s) => s !== "explorer.js"), "explorer.js"]
    .map((s) => `<script src="${s}"></script>`)
    .join("\n");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>guidance-lab explorer</title>
<style>${CSS}</style>
</head>
<body>
<h1>Guidance explorer: the zoo denoiser, sampled in this browser</h1>
<p class="note">Same code, same numbers: the strategy registry, the reverse loop and seeded noise of <code>guidance-lab sample</code> run here (bundled, not rewritten); the denoiser's forward runs on onnxruntime-web (wasm, CPU). A seed gives the image <code>guidance-lab sample --runtime onnx --seed S</code> gives, within 1e-5 on images in [0, 1] (measured at most 6.9e-6; docs/explorer.md). Works from file:// with every file of this folder beside the page; nothing is fetched. From file:// the forwards run on one thread; <code>guidance-lab serve FOLDER</code> serves the page cross-origin isolated, so they run on every core (the status line says how many). WebGPU is not used (its onnxruntime-web build is 2× the size).</p>
<div class="controls">
<label>prompt <input type="text" id="prompt"></label>
<label>prompts from <select id="suite"><option value="">the prompt box</option></select></label>
<label>strategy <select id="strategy"></select></label>
<label>scale <span><input type="range" id="scale" min="0" max="10" step="0.1"> <output id="scale-value"></output></span></label>
<label>sampler <select id="sampler"></select></label>
<label>steps <input type="number" id="steps" min="1" max="1000"></label>
<label>seed <input type="number" id="seed" min="0"></label>
<label>images <input type="number" id="n" min="1" max="16"></label>
</div>
<label class="note">strategy config (JSON, validated by the registry; the slider sets its scale) <textarea id="config" rows="2"></textarea></label>
<p class="note" id="gradient-note"></p>
<button id="run">sample</button>
<div id="status">loading the runtime and models…</div>
<h2 style="font-size:15px">Samples</h2>
<canvas id="grid" width="264" height="33"></canvas>
<h2 style="font-size:15px">Predicted x0 of the first sample, step by step (left = noisiest)</h2>
<canvas id="x0" width="264" height="33"></canvas>
<p class="note" id="sizes"></p>
<script type="application/json" id="explorer-config">${json}</script>
${tags}
</body>
</html>
`;
}

/** Keeps the newest few caches: each code or model change makes a new one (reports keep their own hard links). */
function pruneCaches(keep: string, newest = 3): void {
  const parent = dirname(keep);
  const prefix = "guidance-lab-explorer-";
  const caches = readdirSync(parent)
    .filter((n) => n.startsWith(prefix) && !n.endsWith(".tmp"))
    .map((n) => ({ p: join(parent, n), t: statSync(join(parent, n)).mtimeMs }))
    .sort((a, b) => b.t - a.t);
  for (const c of caches.slice(newest)) if (c.p !== keep) rmSync(c.p, { recursive: true, force: true });
}

/**
 * The explorer for a report page: written once per machine into a cache keyed by the models' and the code's
 * bytes (a child process runs the async build, since report writing is synchronous), then copied into `dir`.
 * Returns undefined, with the reason, when the zoo's denoiser is not available.
 */
export function ensureExplorerSync(
  dir: string,
  models = modelsDir(),
): { files?: ExplorerFiles; why?: string } {
  const missing = explorerMissing(models);
  if (missing) return { why: missing };
  const h = createHash("sha256");
  for (const name of [DEFAULT_ZOO.denoiser, DEFAULT_ZOO.weak]) {
    for (const f of ["model.json", "model.safetensors"]) {
      const p = join(models, name, f);
      if (existsSync(p)) h.update(`${p}:${statSync(p).size}:${statSync(p).mtimeMs}`);
    }
  }
  const srcRoot = join(dirname(fileURLToPath(import.meta.url)), "..");
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.endsWith(".ts")) h.update(`${p}:${statSync(p).mtimeMs}`);
    }
  };
  walk(srcRoot);
  // The runtimes' binaries change with their versions.
  for (const f of [
    require.resolve("onnxruntime-web/ort-wasm-simd-threaded.wasm"),
    require.resolve("@tensorflow/tfjs-backend-wasm"),
  ])
    h.update(`${f}:${statSync(f).size}:${statSync(f).mtimeMs}`);
  const cache = join(tmpdir(), `guidance-lab-explorer-${h.digest("hex").slice(0, 16)}`);
  if (!existsSync(join(cache, "index.html"))) {
    const tmp = `${cache}.${process.pid}.tmp`;
    rmSync(tmp, { recursive: true, force: true });
    execFileSync(
      process.execPath,
      [
        "--import",
        pathToFileURL(require.resolve("tsx/esm")).href,
        fileURLToPath(new URL("./write-cli.ts", import.meta.url)),
        tmp,
        models,
      ],
      // Its stderr (TensorFlow.js's Node greeting) is shown only when the build fails, inside the error.
      { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, GUIDANCE_LAB_QUIET: "1" } },
    );
    try {
      renameSync(tmp, cache);
    } catch {
      // Another process finished the same cache first: its copy is identical.
      rmSync(tmp, { recursive: true, force: true });
    }
    pruneCaches(cache);
  }
  mkdirSync(dir, { recursive: true });
  // Hard links: every report on this file system shares one copy of the ~16 MB (a copy where links fail).
  for (const name of readdirSync(cache)) {
    const dst = join(dir, name);
    rmSync(dst, { force: true });
    try {
      linkSync(join(cache, name), dst);
    } catch {
      copyFileSync(join(cache, name), dst);
    }
  }
  const files = readdirSync(cache).map((name) => ({ name, bytes: statSync(join(cache, name)).size }));
  return { files: { dir, files, total: files.reduce((a, f) => a + f.bytes, 0) } };
}
