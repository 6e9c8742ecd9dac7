/// <reference lib="dom" />
// The guidance explorer's page script (bundled by build.ts into explorer.js, a classic script so that the page
// opens from file://). It samples the zoo denoiser in the browser with the project's own code: the strategy comes
// from the strategy registry, the reverse loop is pipelines/sampling.ts's sampleGuided with the seeded noise of
// `guidance-lab sample`, prompts are encoded by the world's tokenizer; only the denoiser's forward is new here,
// run by onnxruntime-web (wasm) on the ONNX export of src/onnx/export.ts, behind the replay driver (replay.ts).
import * as ort from "onnxruntime-web/wasm";
import { createDiffusion, type ScheduleName } from "../core/diffusion.ts";
import { tf } from "../core/engine.ts";
import { seededNoise } from "../core/samplers.ts";
import type { DenoisedFn } from "../core/types.ts";
import {
  LOOP_SAMPLERS,
  type LoopSampler,
  readImages,
  respacingFor,
  sampleGuided,
  seededXT,
} from "../pipelines/sampling.ts";
import {
  buildStrategy,
  checkStrategySampler,
  parseStrategyConfig,
  STRATEGIES,
  strategyDef,
} from "../strategies/registry.ts";
import { wrapSampling } from "../strategies/shared.ts";
import type { GuidanceModels } from "../strategies/strategy.ts";
import { encodeWorld, epsFromV } from "../zoo/zoo-models.ts";
import { initBrowserEngine } from "./engine-browser.ts";
import { type ForwardRequest, Replay, type ReplayStats } from "./replay.ts";

/** What build.ts writes into the page (#explorer-config). */
export interface ExplorerConfig {
  imageSize: number;
  diffusion: { schedule: string; steps: number };
  /** Models by role ("denoiser", "weak"), each an asset holding its gzipped ONNX bytes. */
  models: Record<
    string,
    { name: string; asset: string; inChannels: number; outChannels: number; ctx: number; prediction: string }
  >;
  /** Suite name → its prompts. */
  suites: Record<string, string[]>;
  /** Model-bag key → why the page does not have it (shown beside the strategy list for the kinds needing it). */
  unavailable: Record<string, string>;
  /** Shown in the page's footer: bytes of every file and the budget. */
  sizeNote: string;
  /** onnxruntime-web's wasm glue module beside the page: its pthreads start from it when the page is served. */
  ortGlue: string;
}

export interface RunSettings {
  prompt: string;
  /** "" = free text. */
  suite: string;
  /** A full strategy config (the registry validates it). */
  strategy: Record<string, unknown>;
  sampler: LoopSampler;
  steps: number;
  seed: number;
  n: number;
}

export interface RunResult {
  /** One HWC float array in [0, 1] per image (readImages). */
  images: number[][];
  /** The first sample's predicted x0 after each step, HWC in [-1, 1] (before the sampler's clamp). */
  x0Steps: number[][];
  ms: number;
  nfe: number;
  stats: ReplayStats;
}

declare global {
  interface Window {
    GL_ASSETS?: Record<string, string>;
    explorer?: {
      ready: Promise<string>;
      run(s: Partial<RunSettings>): Promise<RunResult>;
      settings(): RunSettings;
      /** Completed runs (the slider's reruns included), for tests that wait on a change. */
      runs: number;
      /** onnxruntime-web's threads here (1 from file://). */
      threads: number;
      /**
       * Loads an ONNX graph (base64) with float32 inputs of the given shapes on this page's onnxruntime-web setup
       * and runs it once (the bench's conv roofline); returns its id for timeGraph and dropGraph.
       */
      loadGraph(b64: string, inputs: { name: string; dims: number[] }[]): Promise<number>;
      /** Milliseconds of each of `reps` runs of a loaded graph. */
      timeGraph(id: number, reps: number): Promise<number[]>;
      dropGraph(id: number): Promise<void>;
      busy: boolean;
    };
  }
}

async function gunzipAsset(name: string): Promise<Uint8Array> {
  const b64 = window.GL_ASSETS?.[name];
  if (b64 === undefined)
    throw new Error(`asset '${name}' did not load: its .js file must sit beside the page (see the footer)`);
  const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const stream = new Blob([bin]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** The strategy config path the slider drives: its own `scale`, else its base's (dynamic-threshold), else none. */
function scalePath(config: Record<string, unknown>): string[] | undefined {
  if (typeof config.scale === "number") return ["scale"];
  const base = config.base as Record<string, unknown> | undefined;
  if (base && typeof base.scale === "number") return ["base", "scale"];
  return undefined;
}

function withScale(config: Record<string, unknown>, scale: number): Record<string, unknown> {
  const path = scalePath(config);
  if (!path) return config;
  const copy = structuredClone(config);
  let o = copy;
  for (const k of path.slice(0, -1)) o = o[k] as Record<string, unknown>;
  o[path.at(-1)!] = scale;
  return copy;
}

/** The slider's upper end: 10, or the schema's own maximum when it is lower (cfg++'s λ ≤ 1). */
function scaleMax(config: Record<string, unknown>): number {
  try {
    parseStrategyConfig(withScale(config, 10));
    return 10;
  } catch {
    return 1;
  }
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

async function main(): Promise<void> {
  const cfg = JSON.parse($("explorer-config").textContent ?? "{}") as ExplorerConfig;
  const status = $<HTMLDivElement>("status");
  const say = (s: string, error = false) => {
    status.textContent = s;
    status.className = error ? "error" : "";
  };
  $("sizes").textContent = cfg.sizeNote;

  const backend = await initBrowserEngine(await gunzipAsset("tfjs-wasm"));
  ort.env.wasm.wasmBinary = await gunzipAsset("ort-wasm");
  const params = new URLSearchParams(location.search);
  // file:// pages are never cross-origin isolated, so onnxruntime-web has no SharedArrayBuffer for threads: one
  // thread there. Served with COOP/COEP (`guidance-lab serve`) it takes every core (?threads=N overrides, for the
  // bench). Its pthreads start from the glue module's URL, which the bundled copy lacks (esbuild's iife has no
  // import.meta.url), so the served page loads the glue shipped beside it.
  const cores = navigator.hardwareConcurrency || 1;
  ort.env.wasm.numThreads = globalThis.crossOriginIsolated
    ? Math.max(1, Math.min(cores, Number(params.get("threads") ?? cores) || cores))
    : 1;
  if (ort.env.wasm.numThreads > 1) ort.env.wasm.wasmPaths = { mjs: new URL(cfg.ortGlue, location.href).href };
  ort.env.wasm.proxy = false;
  const sessions: Record<string, ort.InferenceSession> = {};
  for (const [role, m] of Object.entries(cfg.models)) {
    sessions[role] = await ort.InferenceSession.create(await gunzipAsset(m.asset), {
      executionProviders: ["wasm"],
      graphOptimizationLevel: "all",
    });
  }
  const forward = async (r: ForwardRequest): Promise<Float32Array> => {
    const s = sessions[r.model]!;
    const b = r.xShape[0];
    const out = await s.run({
      x: new ort.Tensor("float32", r.x, r.xShape),
      t: new ort.Tensor("float32", r.t, [b]),
      tokens: new ort.Tensor("int32", r.tokens, [b, r.ctx]),
      mask: new ort.Tensor("float32", r.mask, [b, r.ctx]),
    });
    return out.out!.data as Float32Array;
  };
  const runtimeNote = `denoiser on onnxruntime-web ${ort.env.versions.web} (wasm, ${ort.env.wasm.numThreads} thread${ort.env.wasm.numThreads === 1 ? "" : "s"}); strategies and sampler on TensorFlow.js (${backend})`;

  // ----------------------------------------------------------------- controls
  const strategySel = $<HTMLSelectElement>("strategy");
  const available = new Set<keyof GuidanceModels>(["model", "encode", "diffusion", "unconditionalPrompt"]);
  if (cfg.models.weak) available.add("weak");
  // Kinds the page cannot run, grouped by the reason its config gives for the model they need.
  const unavailable = new Map<string, string[]>();
  for (const def of STRATEGIES) {
    const example = def.example as Record<string, unknown>;
    const needs = strategyDef(def.kind).requires(parseStrategyConfig(example));
    const missing = needs.filter((k) => !available.has(k));
    const opt = document.createElement("option");
    opt.value = def.kind;
    opt.textContent = def.kind;
    opt.title = def.summary;
    if (missing.length) {
      opt.disabled = true;
      opt.textContent = `${def.kind} (not in the browser)`;
      const why =
        cfg.unavailable[missing[0]!] ??
        `needs models.${missing.join(", models.")}, which the page does not have.`;
      unavailable.set(why, [...(unavailable.get(why) ?? []), def.kind]);
    }
    strategySel.append(opt);
  }
  $("gradient-note").textContent = [...unavailable]
    .map(([why, kinds]) => `${kinds.join(", ")}: ${why}`)
    .join(" ");
  strategySel.value = "cfg";
  const samplerSel = $<HTMLSelectElement>("sampler");
  for (const s of LOOP_SAMPLERS) samplerSel.append(new Option(s, s));
  const suiteSel = $<HTMLSelectElement>("suite");
  for (const name of Object.keys(cfg.suites)) suiteSel.append(new Option(`suite: ${name}`, name));
  const configBox = $<HTMLTextAreaElement>("config");
  const slider = $<HTMLInputElement>("scale");
  const scaleOut = $<HTMLOutputElement>("scale-value");

  const num = (k: string, d: number) => (params.has(k) ? Number(params.get(k)) : d);
  $<HTMLInputElement>("steps").value = String(num("steps", 25));
  $<HTMLInputElement>("seed").value = String(num("seed", 0));
  $<HTMLInputElement>("n").value = String(num("n", 8));
  $<HTMLInputElement>("prompt").value = params.get("prompt") ?? "a red circle";
  if (params.has("strategy")) strategySel.value = params.get("strategy")!;
  if (params.has("sampler")) samplerSel.value = params.get("sampler")!;

  const setStrategy = (kind: string) => {
    const example = structuredClone(strategyDef(kind).example) as Record<string, unknown>;
    const path = scalePath(example);
    slider.disabled = !path;
    slider.max = String(scaleMax(example));
    slider.step = Number(slider.max) <= 1 ? "0.05" : "0.1";
    const s = path
      ? path.length === 2
        ? (example.base as { scale: number }).scale
        : (example.scale as number)
      : 0;
    slider.value = String(
      params.has("scale") && kind === params.get("strategy") ? Number(params.get("scale")) : s,
    );
    configBox.value = JSON.stringify(withScale(example, Number(slider.value)));
    scaleOut.textContent = slider.disabled ? "—" : slider.value;
  };
  setStrategy(strategySel.value);

  const settings = (): RunSettings => ({
    prompt: $<HTMLInputElement>("prompt").value,
    suite: suiteSel.value,
    strategy: JSON.parse(configBox.value) as Record<string, unknown>,
    sampler: samplerSel.value as LoopSampler,
    steps: Number($<HTMLInputElement>("steps").value),
    seed: Number($<HTMLInputElement>("seed").value),
    n: Number($<HTMLInputElement>("n").value),
  });

  // ----------------------------------------------------------------- sampling
  const { models: modelInfo } = cfg;
  const den = modelInfo.denoiser!;
  const alphas = createDiffusion({
    schedule: cfg.diffusion.schedule as ScheduleName,
    steps: cfg.diffusion.steps,
  }).alphasCumprod;

  async function run(s: RunSettings): Promise<RunResult> {
    for (const [k, v] of [
      ["steps", s.steps],
      ["n", s.n],
      ["seed", s.seed],
    ] as const)
      if (!Number.isInteger(v) || v < (k === "seed" ? 0 : 1))
        throw new Error(`${k}: expected a positive integer, got ${v}`);
    if (s.n > 16) throw new Error(`n: at most 16 images in the browser, got ${s.n}`);
    if (s.steps > cfg.diffusion.steps)
      throw new Error(
        `steps: at most ${cfg.diffusion.steps} (the diffusion steps the denoiser was trained with), got ${s.steps}`,
      );
    const replay = new Replay();
    const asEps = (role: string) => {
      const m = modelInfo[role]!;
      const f = replay.model(role, m.inChannels, m.outChannels);
      return m.prediction === "v" ? epsFromV(f, alphas) : f;
    };
    const diffusion = createDiffusion({
      schedule: cfg.diffusion.schedule as ScheduleName,
      steps: cfg.diffusion.steps,
      respacing: respacingFor(s.sampler, s.steps, cfg.diffusion.steps),
      modelVarType: "learned_range",
    });
    const models: GuidanceModels = {
      model: asEps("denoiser"),
      encode: (prompts) => encodeWorld(prompts, den.ctx),
      unconditionalPrompt: "",
      diffusion,
      ...(modelInfo.weak ? { weak: asEps("weak") } : {}),
    };
    const strategy = buildStrategy(s.strategy, models, "strategy (the JSON box)");
    // before any forward: a strategy defined for some samplers only (cfg++) names the pairing it refuses
    checkStrategySampler(strategy.config, s.sampler, undefined, "sampler");
    const suitePrompts = s.suite ? cfg.suites[s.suite] : undefined;
    if (s.suite && !suitePrompts) throw new Error(`suite: unknown suite '${s.suite}'`);
    const prompts = Array.from({ length: s.n }, (_, i) =>
      suitePrompts ? suitePrompts[i % suitePrompts.length]! : s.prompt,
    );
    const x0Steps: number[][] = [];
    // Records the first sample's x0 and hands it on unchanged (the sampler then clamps it as always).
    const capture: DenoisedFn = (x0, step) => {
      x0Steps[step.k] = Array.from(tf.tidy(() => tf.slice(x0, [0, 0, 0, 0], [1, -1, -1, -1])).dataSync());
      return x0;
    };
    const binding = wrapSampling(strategy.bind(prompts), { denoisedFn: capture });
    const t0 = performance.now();
    try {
      const size = cfg.imageSize;
      let nfe = 0;
      // The tidy frees everything a suspended run allocated; the binding (prompt encodings) lives across runs.
      const sample = await replay.run(
        () =>
          tf.tidy(() => {
            const xT = seededXT(s.seed, s.n, size);
            const r = sampleGuided(diffusion, binding, xT, {
              sampler: s.sampler,
              steps: s.steps,
              noise: seededNoise(s.seed),
            });
            nfe = r.nfe;
            return r.sample;
          }),
        forward,
      );
      const images = (await readImages(sample)).map((a) => Array.from(a));
      sample.dispose();
      return { images, x0Steps, ms: performance.now() - t0, nfe, stats: replay.stats };
    } finally {
      binding.dispose();
    }
  }

  // ----------------------------------------------------------------- drawing
  const draw = (canvas: HTMLCanvasElement, images: number[][], perRow: number, unit: "01" | "pm1") => {
    const S = cfg.imageSize;
    const rows = Math.ceil(images.length / perRow);
    canvas.width = perRow * (S + 1);
    canvas.height = rows * (S + 1);
    const ctx = canvas.getContext("2d")!;
    ctx.fillStyle = "#222";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    for (const [i, img] of images.entries()) {
      const data = ctx.createImageData(S, S);
      for (let p = 0; p < S * S; p++) {
        for (let c = 0; c < 3; c++) {
          const v = unit === "01" ? img[p * 3 + c]! : (img[p * 3 + c]! + 1) / 2;
          data.data[p * 4 + c] = Math.round(255 * Math.min(1, Math.max(0, v)));
        }
        data.data[p * 4 + 3] = 255;
      }
      ctx.putImageData(data, (i % perRow) * (S + 1), Math.floor(i / perRow) * (S + 1));
    }
  };

  let busy = false;
  let queued = false;
  const graphs: { session: ort.InferenceSession; feeds: Record<string, ort.Tensor> }[] = [];
  const api = {
    ready: Promise.resolve(runtimeNote),
    runs: 0,
    busy: false,
    threads: ort.env.wasm.numThreads,
    loadGraph: async (b64: string, inputs: { name: string; dims: number[] }[]) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const session = await ort.InferenceSession.create(bytes, {
        executionProviders: ["wasm"],
        graphOptimizationLevel: "all",
      });
      const feeds = Object.fromEntries(
        inputs.map(({ name, dims }) => {
          const n = dims.reduce((a, d) => a * d, 1);
          return [
            name,
            new ort.Tensor(
              "float32",
              Float32Array.from({ length: n }, (_, i) => Math.cos(i)),
              dims,
            ),
          ];
        }),
      );
      await session.run(feeds);
      graphs.push({ session, feeds });
      return graphs.length - 1;
    },
    timeGraph: async (id: number, reps: number) => {
      const g = graphs[id]!;
      const ms: number[] = [];
      for (let i = 0; i < reps; i++) {
        const t0 = performance.now();
        await g.session.run(g.feeds);
        ms.push(performance.now() - t0);
      }
      return ms;
    },
    dropGraph: async (id: number) => {
      await graphs[id]?.session.release();
    },
    settings,
    run: async (over: Partial<RunSettings>) => run({ ...settings(), ...over }),
  };
  window.explorer = api;

  async function rerun(): Promise<void> {
    if (busy) {
      queued = true;
      return;
    }
    busy = api.busy = true;
    try {
      const s = settings();
      say(`sampling ${s.n} × ${s.steps} ${s.sampler} steps…`);
      const r = await run(s);
      draw($<HTMLCanvasElement>("grid"), r.images, Math.min(8, r.images.length), "01");
      draw($<HTMLCanvasElement>("x0"), r.x0Steps, Math.min(25, r.x0Steps.length), "pm1");
      say(
        `${s.n} image(s), ${s.steps} ${s.sampler} steps, ${JSON.stringify(s.strategy)}: ${(r.ms / 1000).toFixed(2)} s (forwards ${(r.stats.forwardMs / 1000).toFixed(2)} s, ${r.stats.forwards} calls; NFE ${r.nfe} per image). ${runtimeNote}.`,
      );
      api.runs++;
    } catch (e) {
      say(e instanceof Error ? e.message : String(e), true);
      console.warn(e);
    } finally {
      busy = api.busy = false;
    }
    if (queued) {
      queued = false;
      await rerun();
    }
  }

  strategySel.addEventListener("change", () => {
    setStrategy(strategySel.value);
    void rerun();
  });
  slider.addEventListener("input", () => {
    scaleOut.textContent = slider.value;
    try {
      configBox.value = JSON.stringify(withScale(JSON.parse(configBox.value), Number(slider.value)));
    } catch {
      say("the strategy JSON does not parse; fix it to use the slider", true);
    }
  });
  slider.addEventListener("change", () => void rerun());
  for (const id of ["sampler", "suite", "steps", "seed", "n", "prompt", "config"])
    $(id).addEventListener("change", () => void rerun());
  $("run").addEventListener("click", () => void rerun());
  say(`ready: ${runtimeNote}`);
  if (params.get("autorun") !== "0") await rerun();
}

main().catch((e: unknown) => {
  const status = document.getElementById("status");
  if (status) {
    status.textContent = `the explorer could not start: ${e instanceof Error ? e.message : String(e)}`;
    status.className = "error";
  }
  console.error(e);
});
