// The one place that chooses and initialises the TensorFlow.js backend. Everything else imports `tf` from here so
// that the optional native bindings, when a user has them, replace the whole engine (tfjs-node re-exports tfjs).
import * as tfCore from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
import "@tensorflow/tfjs-backend-wasm";
import { installWasmMatMul } from "./wasm-matmul.ts";

export const tf = tfCore;
export type {
  Rank,
  Scalar,
  Tensor,
  Tensor1D,
  Tensor2D,
  Tensor3D,
  Tensor4D,
  Variable,
} from "@tensorflow/tfjs-core";

export const BACKENDS = ["auto", "tensorflow", "wasm", "cpu"] as const;
export type BackendChoice = (typeof BACKENDS)[number];

export interface EngineInfo {
  requested: BackendChoice;
  backend: string;
  reason: string;
}

let active: EngineInfo | undefined;

/** Optional native bindings, imported on demand: they are never dependencies because their install step downloads libtensorflow. */
async function tryNative(): Promise<string | undefined> {
  for (const pkg of ["@tensorflow/tfjs-node-gpu", "@tensorflow/tfjs-node"]) {
    try {
      await import(pkg);
      if (tfCore.findBackend("tensorflow")) return pkg;
    } catch {
      // not installed here; fall through to the next choice
    }
  }
  return undefined;
}

export function backendFromEnv(): BackendChoice {
  const raw = process.env.GUIDANCE_LAB_BACKEND ?? "auto";
  if (!(BACKENDS as readonly string[]).includes(raw)) {
    throw new Error(`GUIDANCE_LAB_BACKEND=${raw}: expected one of ${BACKENDS.join(", ")}`);
  }
  return raw as BackendChoice;
}

/**
 * Initialise the engine once per process (and once per worker thread). `auto` prefers the native TensorFlow
 * binding, then wasm, then the pure-JS cpu backend.
 */
export async function initEngine(
  choice: BackendChoice = backendFromEnv(),
  opts: {
    quiet?: boolean;
    /**
     * "fast" moves wasm's batched and transposed matMuls onto XNNPACK (./wasm-matmul.ts): 3-15x faster, but its
     * products round about 4x more than the loop kernel's (K = 512: 2.0e-5 vs 5.2e-6 absolute), which the golden
     * CLIP-guided trajectory amplifies past its 1e-4 tolerance over 20 steps. Training asks for it; inference and
     * verify-reference keep the reference kernel. It stays for the process (or worker thread) unless switched back
     * with setWasmMatMul("reference").
     */
    matMul?: "reference" | "fast";
  } = {},
): Promise<EngineInfo> {
  if (active && (choice === active.requested || choice === "auto" || choice === active.backend)) {
    if (opts.matMul === "fast" && active.backend === "wasm") installWasmMatMul();
    return active;
  }
  let backend: string;
  let reason: string;
  if (choice === "tensorflow" || choice === "auto") {
    const pkg = await tryNative();
    if (pkg) {
      backend = "tensorflow";
      reason = `${pkg} is installed`;
    } else if (choice === "tensorflow") {
      throw new Error(
        "backend 'tensorflow' needs @tensorflow/tfjs-node or @tensorflow/tfjs-node-gpu installed (npm install @tensorflow/tfjs-node); use --backend wasm otherwise",
      );
    } else {
      backend = "wasm";
      reason = "no native TensorFlow binding installed; wasm is the fastest portable backend";
    }
  } else {
    backend = choice;
    reason = "requested";
  }
  let ok = await tfCore.setBackend(backend);
  if (!ok && choice === "auto" && backend === "wasm") {
    backend = "cpu";
    reason = "wasm failed to initialise; pure-JS cpu backend (slow)";
    ok = await tfCore.setBackend(backend);
  }
  if (!ok) throw new Error(`could not initialise the TensorFlow.js backend '${backend}'`);
  await tfCore.ready();
  // The kernels' gradients (./gradients.ts), registered here rather than on import: every entry point (CLI, worker
  // thread, test) initialises the engine before it differentiates anything. Loaded lazily because the registry
  // itself imports `tf` from this module.
  (await import("./gradients.ts")).registerGradients();
  if (opts.matMul === "fast" && tfCore.getBackend() === "wasm") installWasmMatMul();
  active = { requested: choice, backend: tfCore.getBackend(), reason };
  if (!opts.quiet && process.env.GUIDANCE_LAB_QUIET !== "1") {
    process.stderr.write(`[engine] backend ${active.backend} (${reason})\n`);
  }
  return active;
}

export function engineInfo(): EngineInfo | undefined {
  return active;
}

/** A worker thread running a TypeScript module (e.g. one replica per core, each with its own wasm backend). */
export async function spawnTsWorker(moduleUrl: URL, workerData: Record<string, unknown> = {}) {
  const { Worker } = await import("node:worker_threads");
  return new Worker(new URL("./ts-worker.mjs", import.meta.url), {
    workerData: { ...workerData, __tsModule: moduleUrl.href },
  });
}
