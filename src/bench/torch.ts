// `npm run bench -- --compare-torch PATH`: times the official glide-text2im code from a checkout the user supplies,
// through tools/bench/glide_torch.py, on the inputs and weights our rows use. The project never contains the
// official code: the checkout must live outside the repository, and nothing of it is copied. What is missing
// (python, torch, numpy, the checkout) is reported by `torchMissing`, and the bench carries on without it.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { type Tensor, tf } from "../core/engine.ts";
import { encodeNpy, npyToFloat32, readNpy } from "../core/npy.ts";
import { REPO_ROOT } from "../core/paths.ts";

export interface TorchOptions {
  /** A glide-text2im checkout (the folder holding glide_text2im/). */
  checkout: string;
  /** Python interpreter with torch and numpy (default python3). */
  python?: string;
  /** torch.set_num_threads values, one run each (default 1 and 2; the golden manifest's timings used 2). */
  threads?: number[];
  /** Minimum wall time of the forward timing loop, seconds (default 3). */
  minSeconds?: number;
}

export interface TorchResult {
  torch: string;
  threads: number;
  /** The BLAS library torch loaded (the reference BLAS makes it ~10x slower than the official figures). */
  blas: string;
  forwardS: { median: number; min: number; reps: number };
  cfgStepS: number;
  cfgSteps: number;
  /** The forward output, NCHW, when it came back. */
  out?: Float32Array;
}

export const TORCH_SCRIPT = join(REPO_ROOT, "tools", "bench", "glide_torch.py");

/** What stops the comparison, one line each (empty: ready). */
export function torchMissing(opts: TorchOptions): string[] {
  const missing: string[] = [];
  const py = opts.python ?? "python3";
  const probe = spawnSync(py, ["-c", "import torch, numpy; print(torch.__version__)"], { encoding: "utf8" });
  if (probe.error)
    missing.push(`${py}: not found (${(probe.error as NodeJS.ErrnoException).code ?? probe.error.message})`);
  else if (probe.status !== 0) {
    const last = probe.stderr.trim().split("\n").pop() ?? "";
    missing.push(
      `${py} cannot import torch and numpy (${last}); e.g. apt-get install python3-torch, or --python to choose an interpreter`,
    );
  }
  const dir = resolve(opts.checkout);
  if (!existsSync(join(dir, "glide_text2im", "model_creation.py")))
    missing.push(`${dir} is not a glide-text2im checkout (no glide_text2im/model_creation.py)`);
  const rel = relative(REPO_ROOT, dir);
  if (!rel.startsWith("..") && !rel.startsWith("/"))
    missing.push(`${dir} is inside this project: keep the official code outside it`);
  return missing;
}

/**
 * Runs the official code on `flags` (GLIDE's model_and_diffusion flags) with the given NHWC inputs and optional
 * weights (safetensors with the official names): forward timing, the forward output, and cfg sampling per step.
 */
export function runTorchGlide(
  opts: TorchOptions,
  flags: Record<string, unknown>,
  inputs: { x: Tensor; t: Tensor; tokens: Tensor; mask: Tensor },
  weights: string | undefined,
  cfgSteps: number,
  threads: number,
): TorchResult {
  const dir = mkdtempSync(join(tmpdir(), "gl-torch-"));
  try {
    const f32 = (t: Tensor) => Float32Array.from(t.dataSync());
    const nchw = tf.tidy(() => tf.transpose(inputs.x, [0, 3, 1, 2]));
    writeFileSync(join(dir, "x.npy"), encodeNpy(f32(nchw), nchw.shape));
    nchw.dispose();
    for (const [name, t] of [
      ["t", inputs.t],
      ["tokens", inputs.tokens],
      ["mask", inputs.mask],
    ] as const)
      writeFileSync(join(dir, `${name}.npy`), encodeNpy(f32(t), t.shape));
    writeFileSync(join(dir, "flags.json"), JSON.stringify(flags));
    const args = [
      TORCH_SCRIPT,
      "--checkout",
      resolve(opts.checkout),
      "--flags",
      join(dir, "flags.json"),
      "--inputs",
      dir,
      "--threads",
      String(threads),
      "--min-seconds",
      String(opts.minSeconds ?? 3),
      "--cfg-steps",
      String(cfgSteps),
      ...(weights ? ["--weights", weights] : []),
    ];
    // torch.set_num_threads covers torch's own pool; the BLAS and OpenMP pools read their counts from the
    // environment, so a 1-thread figure is 1 thread throughout.
    const n = String(threads);
    const env = { ...process.env, OMP_NUM_THREADS: n, OPENBLAS_NUM_THREADS: n, MKL_NUM_THREADS: n };
    const r = spawnSync(opts.python ?? "python3", args, { encoding: "utf8", maxBuffer: 1 << 24, env });
    if (r.error) throw new Error(`compare-torch: ${r.error.message}`);
    if (r.stderr.trim()) process.stderr.write(r.stderr);
    if (r.status !== 0)
      throw new Error(
        `compare-torch: ${TORCH_SCRIPT} exited with ${r.status}: ${r.stderr.trim().split("\n").pop()}`,
      );
    const json = JSON.parse(r.stdout.trim().split("\n").pop() ?? "{}") as {
      torch: string;
      threads: number;
      blas?: string;
      forward_s: { median: number; min: number; reps: number };
      cfg_step_s: number;
      cfg_steps: number;
      out?: string;
    };
    const outPath = join(dir, json.out ?? "torch_out.npy");
    return {
      torch: json.torch,
      threads: json.threads,
      blas: json.blas ?? "",
      forwardS: json.forward_s,
      cfgStepS: json.cfg_step_s,
      cfgSteps: json.cfg_steps,
      ...(existsSync(outPath) ? { out: npyToFloat32(readNpy(outPath)) } : {}),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
