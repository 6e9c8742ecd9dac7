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
  /** Longest a single call may block waiting for the worker (default 10 minutes). */
  timeoutMs?: number;
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
}

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

  constructor(opts: OnnxOptions = {}) {
    this.providers = opts.providers ?? providersFromEnv();
    this.threads = opts.threads ?? availableParallelism();
    this.spin = opts.spin ?? spinFromEnv(false);
    this.timeoutMs = opts.timeoutMs ?? 600_000;
    this.worker = new Worker(new URL("./worker.mjs", import.meta.url), {
      workerData: { signal: this.signal },
    });
    this.worker.unref();
  }

  /** Posts a message and blocks until the worker answers; returns the bytes it wrote. */
  private call(
    msg: Record<string, unknown>,
    data: SharedArrayBuffer,
    transfer: ArrayBuffer[] = [],
  ): Uint8Array {
    Atomics.store(this.flag, 0, 0);
    this.worker.postMessage({ ...msg, data }, transfer);
    // The worker cannot be observed while this thread blocks, so a crashed one is caught by a time limit.
    if (Atomics.wait(this.flag, 0, 0, this.timeoutMs) === "timed-out")
      throw new Error(`onnxruntime worker gave no answer within ${this.timeoutMs} ms`);
    const status = Atomics.load(this.flag, 0);
    const n = this.flag[1]!;
    const bytes = new Uint8Array(data, 0, n);
    if (status !== 1) throw new Error(`onnxruntime: ${new TextDecoder().decode(bytes.slice())}`);
    return bytes;
  }

  /** The session of `key`, exported by `build` (whose single float32 output has `outFloats` values) if new. */
  session(key: string, build: () => Uint8Array, outFloats: number): Session {
    let s = this.sessions.get(key);
    if (!s) {
      const bytes = build();
      s = { id: this.nextId++, data: new SharedArrayBuffer(Math.max(4 * outFloats, 4096)) };
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
        this.call(msg, s.data, [bytes.buffer as ArrayBuffer]);
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
    const bytes = this.call({ kind: "run", id: s.id, feeds }, s.data);
    if (bytes.length !== 4 * outFloats)
      throw new Error(`onnxruntime: ${bytes.length / 4} output values, expected ${outFloats}`);
    const out = new Float32Array(outFloats);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }

  dispose(): void {
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
  if (runtime === "tfjs") return { model: unetModel(unet), perturbed, runtime, dispose: disposePerturbed };
  const fn = onnxModelFn(unet);
  return {
    model: fn,
    perturbed,
    runtime,
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
