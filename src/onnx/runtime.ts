// Models on onnxruntime-node (CPU) behind synchronous calls: the UNet as a ModelFn, and the noised CLIP's embeddings.
// onnxruntime-node only runs sessions asynchronously, while ModelFn is synchronous, so sessions live in a worker
// thread (worker.mjs) and each call blocks on Atomics.wait until the worker has written the output into a
// SharedArrayBuffer. One session per model and input shape (batch, image size, low-res size) is created on first
// use and reused; the output is copied once, from the shared buffer into the result tensor.
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { Tensor, Tensor1D, Tensor2D, Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import type { Prediction } from "../core/types.ts";
import type { ClipModel } from "../nets/clip.ts";
import type { ModelFn } from "../nets/denoiser.ts";
import { splitPrediction, unetModel } from "../nets/denoiser.ts";
import { type Perturbation, perturbationKey } from "../nets/perturb.ts";
import type { Conditioning, UNet } from "../nets/unet.ts";
import type { Runtime } from "./choice.ts";
import { type ExportShapes, exportUNet } from "./export.ts";
import { exportClipImage, exportClipText } from "./export-clip.ts";

export interface OnnxOptions {
  /** intraOpNumThreads; default all cores. */
  threads?: number;
  /**
   * Let idle pool threads spin between ops (ORT's default). Off here: on a shared machine (this one trains the zoo
   * in the background) spinning threads fight the other processes for cores; GLIDE small at batch 4 on 2 threads
   * measured 0.74 s with spinning and 0.53 s without, while spinning saves at most a few µs per op when idle.
   */
  spin?: boolean;
  /**
   * The watchdog: longest a call may wait for the worker while the process does no work at all (default 10
   * minutes; see StallWatch).
   */
  timeoutMs?: number;
  /** The worker script (default worker.mjs): tests pass a stand-in that hangs or dies. */
  workerUrl?: URL;
  /** Execution providers in order of preference; default GUIDANCE_LAB_ONNX_PROVIDERS, else ["cpu"]. */
  providers?: readonly OnnxProvider[];
}

/**
 * Execution providers a user may ask for. "cuda" needs Linux x64, CUDA 12 with cuDNN 9, and onnxruntime-node's
 * CUDA binaries, which its install step downloads unless told to skip (this project's .npmrc skips them so that
 * installs work offline): `npm install onnxruntime-node --onnxruntime-node-install=cuda12` brings them.
 */
export const ONNX_PROVIDERS = ["cpu", "cuda"] as const;
export type OnnxProvider = (typeof ONNX_PROVIDERS)[number];

/**
 * GUIDANCE_LAB_ONNX_SPIN=1|0: whether ONNX Runtime's pool threads spin between ops. Spinning saves the wake-up of
 * every parallel op, worth it when the process has the cores to itself; on a shared machine the spinning threads
 * take cores from the others. Unset: `fallback`.
 */
export function spinFromEnv(fallback: boolean, raw = process.env.GUIDANCE_LAB_ONNX_SPIN): boolean {
  if (raw === undefined || raw === "") return fallback;
  if (raw !== "0" && raw !== "1") throw new Error(`GUIDANCE_LAB_ONNX_SPIN=${raw}: expected 0 or 1`);
  return raw === "1";
}

/** GUIDANCE_LAB_ONNX_PROVIDERS ("cuda,cpu", ...) parsed and checked; ["cpu"] when unset. */
export function providersFromEnv(raw = process.env.GUIDANCE_LAB_ONNX_PROVIDERS): OnnxProvider[] {
  if (raw === undefined || raw.trim() === "") return ["cpu"];
  const names = raw.split(",").map((n) => n.trim().toLowerCase());
  for (const n of names) {
    if (!(ONNX_PROVIDERS as readonly string[]).includes(n))
      throw new Error(
        `GUIDANCE_LAB_ONNX_PROVIDERS=${raw}: unknown execution provider '${n}' (known: ${ONNX_PROVIDERS.join(", ")})`,
      );
  }
  return names as OnnxProvider[];
}

export interface Feed {
  type: "float32" | "int32";
  data: Float32Array | Int32Array;
  dims: number[];
}

export interface Session {
  id: number;
  data: SharedArrayBuffer;
  /** The key it was created for (named in errors). */
  key?: string;
}

/** Process CPU time (all threads, user + system) in ms. */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/**
 * The bridge's watchdog: it counts only *stalled* time, that is waiting in which the process did no work, and each
 * wait slice counts for at most its own length. A worker thread that died or hung does no work; a long but live
 * call (a big batch on a loaded machine, where this process may get a few percent of a core) keeps the ONNX
 * Runtime threads busy, which shows as process CPU time and restarts the count. A process stopped by SIGSTOP (or a
 * suspended machine) sees one slice last minutes or hours once it is continued; counting wall time there made a
 * live call look hung (a sweep died that way after a SIGSTOP/SIGCONT), so such a slice counts as one slice.
 */
export class StallWatch {
  /** Length of one wait: a tenth of the limit, 10 ms to 1 s. */
  readonly sliceMs: number;
  private stalled = 0;

  constructor(readonly limitMs: number) {
    this.sliceMs = Math.min(1000, Math.max(10, limitMs / 10));
  }

  /**
   * CPU time that counts as work in one slice: 2% of a core. An idle process uses 0.1-0.5% (timers, GC: measured);
   * ONNX Runtime computing at nice 19 beside two busy nice-0 processes still gets ~3% on this 2-core machine.
   */
  private progressCpuMs(): number {
    return Math.max(5, 0.02 * this.sliceMs);
  }

  /** Stalled time so far (ms). */
  get stalledMs(): number {
    return this.stalled;
  }

  /**
   * One wait slice that lasted `elapsedMs` of wall time and in which the process used `cpuMs` of CPU: true when the
   * stalled time has reached the limit.
   */
  observe(elapsedMs: number, cpuMs: number): boolean {
    if (cpuMs >= this.progressCpuMs()) this.stalled = 0;
    else this.stalled += Math.min(elapsedMs, this.sliceMs);
    return this.stalled >= this.limitMs;
  }
}

/** Answer codes in the signal buffer's flag[0] (worker.mjs writes them; 2 is a failed call, its error as text). */
const WAITING = 0;
const OK = 1;
const WORKER_EXITED = 3;

/**
 * A tensor's values as a Float32Array: onnxruntime-node rejects any other array type for float32 feeds, and a
 * tfjs backend may hand back another one (e.g. int32 timesteps, or a cast's output on the cpu backend).
 */
function f32(t: Tensor): Float32Array {
  const d = t.dataSync();
  return d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number>);
}

/** Why onnxruntime-node cannot be loaded here (tests skip then), or undefined when it loads. */
export async function onnxUnavailable(): Promise<string | undefined> {
  try {
    await import("onnxruntime-node");
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

/**
 * A worker thread hosting onnxruntime-node sessions, called synchronously: one session per key (a model and its
 * input shapes), created from the bytes `build` exports on first use and reused after.
 */
export class OnnxSessions {
  private readonly worker: Worker;
  private readonly signal = new SharedArrayBuffer(8);
  private readonly flag = new Int32Array(this.signal);
  private readonly sessions = new Map<string, Session>();
  private nextId = 0;
  private readonly threads: number;
  private readonly spin: boolean;
  private readonly timeoutMs: number;
  private readonly providers: readonly OnnxProvider[];
  /** Why this host takes no more calls (its worker died, or a call was given up on); undefined while usable. */
  private broken: string | undefined;
  /** A call was given up on while the worker may still be running it. */
  private abandoned = false;

  constructor(opts: OnnxOptions = {}) {
    this.providers = opts.providers ?? providersFromEnv();
    this.threads = opts.threads ?? availableParallelism();
    this.spin = opts.spin ?? spinFromEnv(false);
    this.timeoutMs = opts.timeoutMs ?? 600_000;
    this.worker = new Worker(opts.workerUrl ?? new URL("./worker.mjs", import.meta.url), {
      workerData: { signal: this.signal },
    });
    this.worker.unref();
    // Seen between calls (this thread blocks during one): the next call then fails at once, naming the cause.
    // Without an 'error' listener a worker's uncaught error would be rethrown here and end the process.
    this.worker.on("error", (e) => {
      this.broken ??= `onnxruntime worker failed: ${e.message}`;
    });
    this.worker.on("exit", (code) => {
      this.broken ??= `onnxruntime worker exited (code ${code})`;
    });
  }

  /**
   * Posts a message and blocks until the worker answers; returns the bytes it wrote. `what` names the call in
   * errors. A worker that exits mid-call answers WORKER_EXITED itself (worker.mjs); one that hangs is caught by the
   * watchdog (StallWatch). Either way the call throws and this host takes no more calls.
   */
  private call(
    what: string,
    msg: Record<string, unknown>,
    data: SharedArrayBuffer,
    transfer: ArrayBuffer[] = [],
  ): Uint8Array {
    if (this.broken) throw new Error(`onnxruntime: cannot ${what}: ${this.broken}`);
    Atomics.store(this.flag, 0, WAITING);
    this.worker.postMessage({ ...msg, data }, transfer);
    const watch = new StallWatch(this.timeoutMs);
    const started = performance.now();
    let cpu = cpuMs();
    while (Atomics.load(this.flag, 0) === WAITING) {
      const t = performance.now();
      if (Atomics.wait(this.flag, 0, WAITING, watch.sliceMs) !== "timed-out") continue;
      const now = cpuMs();
      if (watch.observe(performance.now() - t, now - cpu)) {
        // The worker may still be inside the call: it must not get another, and dispose waits for it.
        this.abandoned = true;
        this.broken = `an earlier call (${what}) was given up on`;
        const wall = ((performance.now() - started) / 1000).toFixed(1);
        throw new Error(
          `onnxruntime worker gave no answer to ${what}: ${(watch.stalledMs / 1000).toFixed(1)} s without the process doing any work (${wall} s in all); the worker thread looks hung or dead, so the call is abandoned (the watchdog limit is ${this.timeoutMs / 1000} s of stalled time; a run that stops here keeps what it finished: rerun it, e.g. a sweep with --resume)`,
        );
      }
      cpu = now;
    }
    const status = Atomics.load(this.flag, 0);
    const n = this.flag[1]!;
    const bytes = new Uint8Array(data, 0, n);
    const text = () => new TextDecoder().decode(bytes.slice());
    if (status === WORKER_EXITED) {
      this.broken = text();
      throw new Error(`onnxruntime: no answer to ${what}: ${this.broken}`);
    }
    if (status !== OK) throw new Error(`onnxruntime: ${text()}`);
    return bytes;
  }

  /** The session of `key`, exported by `build` (whose single float32 output has `outFloats` values) if new. */
  session(key: string, build: () => Uint8Array, outFloats: number): Session {
    let s = this.sessions.get(key);
    if (!s) {
      const bytes = build();
      s = { id: this.nextId++, data: new SharedArrayBuffer(Math.max(4 * outFloats, 4096)), key };
      // Transferred, not cloned: the model bytes hold every weight.
      const msg = {
        kind: "create",
        id: s.id,
        bytes,
        threads: this.threads,
        spin: this.spin,
        providers: this.providers,
      };
      try {
        this.call(`create session '${key}'`, msg, s.data, [bytes.buffer as ArrayBuffer]);
      } catch (e) {
        if (!this.providers.includes("cuda")) throw e;
        throw new Error(
          `${(e as Error).message}\n(execution providers [${this.providers.join(", ")}]: the CUDA provider needs Linux x64, CUDA 12 with cuDNN 9 and onnxruntime-node's CUDA binaries: npm install onnxruntime-node --onnxruntime-node-install=cuda12; unset GUIDANCE_LAB_ONNX_PROVIDERS for the CPU)`,
        );
      }
      this.sessions.set(key, s);
    }
    return s;
  }

  /** Runs a session; the output is copied once, out of the shared buffer. */
  run(s: Session, feeds: Record<string, Feed>, outFloats: number): Float32Array {
    const bytes = this.call(`run session '${s.key ?? s.id}'`, { kind: "run", id: s.id, feeds }, s.data);
    if (bytes.length !== 4 * outFloats)
      throw new Error(`onnxruntime: ${bytes.length / 4} output values, expected ${outFloats}`);
    const out = new Float32Array(outFloats);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }

  /**
   * Ends the worker. After a call was given up on, first waits up to `graceMs` for the worker to finish it:
   * terminating a worker inside onnxruntime-node's native run aborts the whole process (SIGABRT, exit 134: measured
   * with a slow Conv), while a worker that is idle, or dead, ends cleanly.
   */
  dispose(graceMs = 2000): void {
    if (this.abandoned) Atomics.wait(this.flag, 0, WAITING, graceMs);
    void this.worker.terminate();
    this.sessions.clear();
  }
}

export class OnnxUNetRunner {
  private readonly host: OnnxSessions;
  private readonly perturbation: Perturbation | undefined;

  /** `perturbation`: every session of this runner is the perturbed graph (PAG, SEG, skip-layer guidance). */
  constructor(
    readonly unet: UNet,
    opts: OnnxOptions & { perturbation?: Perturbation } = {},
  ) {
    this.host = new OnnxSessions(opts);
    this.perturbation = opts.perturbation;
    // Bad layer names fail here, before any export.
    if (opts.perturbation) unet.resolvePerturbation(opts.perturbation);
  }

  forward(x: Tensor4D, t: Tensor1D, cond: Conditioning = {}): Tensor4D {
    const [b, h, w, c] = x.shape;
    const cfg = this.unet.config;
    const shapes: ExportShapes = { batch: b, height: h, width: w };
    const feeds: Record<string, Feed> = {
      x: { type: "float32", data: f32(x), dims: [b, h, w, c] },
      t: { type: "float32", data: f32(t), dims: [b] },
    };
    if (cfg.numClasses !== undefined) {
      if (!cond.y) throw new Error("this UNet is class-conditional: pass class labels `y`");
      feeds.y = { type: "int32", data: Int32Array.from(cond.y.dataSync()), dims: [b] };
    }
    if (this.unet.text) {
      if (!cond.tokens || !cond.mask)
        throw new Error("this UNet is text-conditional: pass `tokens` and `mask`");
      const ctx = cond.tokens.shape[1];
      feeds.tokens = { type: "int32", data: Int32Array.from(cond.tokens.dataSync()), dims: [b, ctx] };
      feeds.mask = { type: "float32", data: f32(cond.mask), dims: [b, ctx] };
    }
    if (cfg.inpaint) {
      // Absent inputs are zeros, as in the official forward (and UNet.modelInput).
      const image = cond.inpaintImage;
      const mask = cond.inpaintMask;
      if (mask && (mask.shape[1] !== h || mask.shape[2] !== w || mask.shape[3] !== 1))
        throw new Error(`inpainting: mask must be [B, ${h}, ${w}, 1], got [${mask.shape.join(", ")}]`);
      feeds.inpaint_image = {
        type: "float32",
        data: image ? f32(image) : new Float32Array(b * h * w * c),
        dims: [b, h, w, c],
      };
      feeds.inpaint_mask = {
        type: "float32",
        data: mask ? f32(mask) : new Float32Array(b * h * w),
        dims: [b, h, w, 1],
      };
    }
    if (cfg.superRes) {
      if (!cond.lowRes)
        throw new Error("this UNet is a super-resolution model: pass the low-res image `lowRes`");
      const [, lh, lw, lc] = cond.lowRes.shape;
      shapes.lowResHeight = lh;
      shapes.lowResWidth = lw;
      feeds.low_res = { type: "float32", data: f32(cond.lowRes), dims: [b, lh, lw, lc] };
    }
    const oc = cfg.outChannels;
    const key = `${b}x${h}x${w}/${shapes.lowResHeight ?? 0}x${shapes.lowResWidth ?? 0}/${perturbationKey(this.perturbation)}`;
    const n = b * h * w * oc;
    const s = this.host.session(key, () => exportUNet(this.unet, shapes, this.perturbation), n);
    return tf.tensor4d(this.host.run(s, feeds, n), [b, h, w, oc]);
  }

  dispose(): void {
    this.host.dispose();
  }
}

/** A denoiser's forward on a resolved runtime, and how to free what it holds (ONNX sessions). */
export interface DenoiserForward {
  model: ModelFn;
  /** The same network with chosen blocks perturbed (ONNX: one exported graph per perturbation, kept until dispose). */
  perturbed(p: Perturbation): ModelFn;
  runtime: Runtime;
  /** The unperturbed network's raw output (every channel) on the same runtime, for differentiableDenoiser. */
  raw(x: Tensor4D, t: Tensor1D, cond: Conditioning): Tensor4D;
  dispose(): void;
}

/**
 * `unet`'s forward on ONNX Runtime (one session per input shape, freed by dispose) or TensorFlow.js. Forward only:
 * gradient guides (classifier, CLIP) come to ONNX Runtime as traced gradients (guide-grad.ts).
 */
export function denoiserOn(unet: UNet, runtime: Runtime = "tfjs"): DenoiserForward {
  const made = new Map<string, ModelFn & { runner?: OnnxUNetRunner }>();
  const perturbed = (p: Perturbation) => {
    const key = perturbationKey(p);
    let fn = made.get(key);
    if (!fn) {
      fn = runtime === "tfjs" ? unetModel(unet, p) : onnxModelFn(unet, { perturbation: p });
      made.set(key, fn);
    }
    return fn;
  };
  const disposePerturbed = () => {
    for (const fn of made.values()) fn.runner?.dispose();
    made.clear();
  };
  if (runtime === "tfjs")
    return {
      model: unetModel(unet),
      perturbed,
      runtime,
      raw: (x, t, cond) => unet.forward(x, t, cond),
      dispose: disposePerturbed,
    };
  const fn = onnxModelFn(unet);
  return {
    model: fn,
    perturbed,
    runtime,
    raw: (x, t, cond) => fn.runner.forward(x, t, cond),
    dispose: () => {
      fn.runner.dispose();
      disposePerturbed();
    },
  };
}

/** The UNet on onnxruntime-node as a ModelFn (same output split as strategy.ts's unetModel). */
export function onnxModelFn(
  unet: UNet,
  opts: OnnxOptions & { perturbation?: Perturbation } = {},
): ModelFn & { runner: OnnxUNetRunner } {
  const runner = new OnnxUNetRunner(unet, opts);
  const c = unet.config.inChannels;
  const fn = (x: Tensor4D, t: Tensor1D, cond: Conditioning): Prediction =>
    tf.tidy(() => splitPrediction(runner.forward(x, t, cond), c));
  return Object.assign(fn, { runner });
}

/**
 * The noised CLIP's unit-norm embeddings on onnxruntime-node, for forward-only uses (metrics embed samples and
 * prompts); CLIP guidance's gradient is traced instead (guide-grad.ts). Same values as
 * ClipModel.embedImage / embedText to ~1e-6.
 */
export class OnnxClip {
  private readonly host: OnnxSessions;

  constructor(
    readonly model: ClipModel,
    opts: OnnxOptions = {},
  ) {
    this.host = new OnnxSessions(opts);
  }

  /** z_i of NHWC x in [-1, 1] at original timesteps t. */
  embedImage(x: Tensor4D, t: Tensor1D): Tensor2D {
    const b = x.shape[0];
    const e = this.model.config.nEmbd;
    const s = this.host.session(`image/${b}`, () => exportClipImage(this.model, b), b * e);
    const out = this.host.run(
      s,
      {
        x: { type: "float32", data: f32(x), dims: [...x.shape] },
        t: { type: "int32", data: Int32Array.from(t.dataSync()), dims: [b] },
      },
      b * e,
    );
    return tf.tensor2d(out, [b, e]);
  }

  /** z_t of token ids [B, maxTextLen] whose real lengths (1..maxTextLen) are `lens`. */
  embedText(tokens: Tensor2D, lens: readonly number[]): Tensor2D {
    const [b, t] = tokens.shape;
    if (t !== this.model.config.maxTextLen)
      throw new Error(
        `CLIP text encoder: tokens have context ${t}, the model expects ${this.model.config.maxTextLen}`,
      );
    if (lens.length !== b || lens.some((n) => !Number.isInteger(n) || n < 1 || n > t))
      throw new Error(`CLIP text encoder: need ${b} lengths in 1..${t}, got [${lens.join(", ")}]`);
    const e = this.model.config.nEmbd;
    const s = this.host.session(`text/${b}`, () => exportClipText(this.model, b), b * e);
    const out = this.host.run(
      s,
      {
        tokens: { type: "int32", data: Int32Array.from(tokens.dataSync()), dims: [b, t] },
        lens: { type: "int32", data: Int32Array.from(lens), dims: [b] },
      },
      b * e,
    );
    return tf.tensor2d(out, [b, e]);
  }

  dispose(): void {
    this.host.dispose();
  }
}
