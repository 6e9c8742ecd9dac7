// Shared plumbing of the golden-reference verifier: loading arrays with errors that name the file, comparing
// against the reference's max |value|, and turning any failure of a case into a failing row instead of a crash.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import { type NpyArray, npyToFloat32, npyToNumbers, parseNpy } from "../core/npy.ts";
import type { Runtime } from "../onnx/choice.ts";

export interface Row {
  section: string;
  case: string;
  maxAbs: number;
  /** maxAbs relative to the reference array's max |value|. */
  rel: number;
  tol: number;
  /** Where `tol` came from when it is not the fixed default: e.g. "manifest meta.tolerances.…". */
  tolFrom?: string;
  pass: boolean;
  /** An optional intermediate array the golden set does not hold: nothing compared, not a failure. */
  skipped?: boolean;
  note?: string;
}

/** Schedules, unit primitives and single forwards/steps. */
export const TOL_SINGLE = 1e-5;
/**
 * Whole sampling trajectories, where float32 rounding compounds over the steps: the default when the manifest
 * gives no tolerance for the loop (meta.tolerances.trajectory_final_samples.<section>; SectionContext.trajectoryTol).
 */
export const TOL_TRAJECTORY = 1e-4;

/** The note of a row whose intermediate array the golden set leaves out (README: aids, not requirements). */
export const NOT_IN_GOLDEN = "not in golden set";

export interface Manifest {
  meta?: Record<string, unknown>;
  arrays?: Record<string, { file?: string; shape?: number[]; dtype?: string }>;
}

/** manifest.json of a golden directory, or why it could not be read. */
export function loadManifest(dir: string): { manifest?: Manifest; error?: string } {
  const path = join(dir, "manifest.json");
  if (!existsSync(path)) return { error: "file not found" };
  try {
    return { manifest: JSON.parse(readFileSync(path, "utf8")) as Manifest };
  } catch (err) {
    return { error: `not valid JSON (${(err as Error).message})` };
  }
}

/** A problem with the reference files themselves (missing, malformed, inconsistent). */
export class GoldenError extends Error {}

export class SectionContext {
  readonly dir: string;
  readonly section: string;
  readonly manifest: Manifest | undefined;
  private readonly manifestError: string | undefined;
  /**
   * Runtime of the denoisers' forwards in the model-driven sections (ONNX Runtime or TensorFlow.js); gradient
   * guidance models always run on TensorFlow.js, as in sampling.
   */
  readonly runtime: Runtime;

  constructor(
    dir: string,
    section: string,
    manifest: Manifest | undefined,
    manifestError?: string,
    runtime: Runtime = "tfjs",
  ) {
    this.dir = dir;
    this.section = section;
    this.manifest = manifest;
    this.manifestError = manifestError;
    this.runtime = runtime;
  }

  /** Path relative to the golden directory, as notes show it. */
  rel(name: string): string {
    return `${this.section}/${name}`;
  }

  has(name: string): boolean {
    return existsSync(join(this.dir, this.section, name));
  }

  /** Entries of a folder of this section (sorted); [] when it does not exist. */
  list(sub = ""): string[] {
    const p = join(this.dir, this.section, sub);
    if (!existsSync(p) || !statSync(p).isDirectory()) return [];
    return readdirSync(p).sort();
  }

  /** Loads `<section>/<name>` (name may contain a subfolder), checking its shape against the manifest if listed. */
  load(name: string): NpyArray {
    const rel = this.rel(name);
    const full = join(this.dir, rel);
    if (!existsSync(full)) throw new GoldenError(`${rel}: file not found`);
    let arr: NpyArray;
    try {
      arr = parseNpy(readFileSync(full), rel);
    } catch (err) {
      throw new GoldenError((err as Error).message);
    }
    const listed = this.manifest?.arrays?.[rel.replace(/\.npy$/, "")];
    if (listed?.shape && JSON.stringify(listed.shape) !== JSON.stringify(arr.shape)) {
      throw new GoldenError(
        `${rel}: shape [${arr.shape.join(", ")}] differs from the manifest's [${listed.shape.join(", ")}]`,
      );
    }
    return arr;
  }

  loadNumbers(name: string): number[] {
    return npyToNumbers(this.load(name));
  }

  /**
   * This loop's trajectory tolerance: the manifest's meta.tolerances.trajectory_final_samples.<section> when it
   * has one (set by the golden set's makers above the official code's own run-to-run spread), else TOL_TRAJECTORY.
   */
  trajectoryTol(): { tol: number; from: string } {
    const t = (
      this.manifest?.meta?.tolerances as { trajectory_final_samples?: Record<string, unknown> } | undefined
    )?.trajectory_final_samples?.[this.section];
    if (typeof t === "number" && Number.isFinite(t) && t > 0)
      return { tol: t, from: `manifest meta.tolerances.trajectory_final_samples.${this.section}` };
    return { tol: TOL_TRAJECTORY, from: "default (no manifest tolerance for this loop)" };
  }

  /** A trajectory row compared at this loop's tolerance, naming where the tolerance came from. */
  trajectoryRow(row: (tol: number) => Row): Row {
    const { tol, from } = this.trajectoryTol();
    return { ...row(tol), tolFrom: from };
  }

  /** Which of `names` this section lacks. */
  missing(names: readonly string[]): string[] {
    return names.filter((n) => !this.has(n));
  }

  /** A value under manifest.meta by path, e.g. meta("small_glide", "noise_schedule"). */
  meta<T = unknown>(...path: string[]): T {
    if (!this.manifest) throw new GoldenError(`manifest.json: ${this.manifestError ?? "missing"}`);
    let v: unknown = this.manifest.meta;
    for (const key of path) {
      if (typeof v !== "object" || v === null || !(key in v)) {
        throw new GoldenError(`manifest.json: meta.${path.join(".")} is missing`);
      }
      v = (v as Record<string, unknown>)[key];
    }
    return v as T;
  }
}

export interface SectionChecker {
  /** Directory name under the golden root. */
  name: string;
  /**
   * A golden-format folder in the repository (manifest.json + <name>/) that holds this section's arrays when the
   * golden directory has none; such a section still takes its model weights from the golden directory, and runs
   * only when named.
   */
  fixture?: string;
  run(ctx: SectionContext): Promise<Row[]> | Row[];
}

export function failRow(section: string, caseName: string, note: string): Row {
  return { section, case: caseName, maxAbs: Number.NaN, rel: Number.NaN, tol: 0, pass: false, note };
}

/** A row for optional intermediate arrays the golden set does not hold (`what` says which). */
export function skipRow(section: string, caseName: string, what: string): Row {
  return {
    section,
    case: caseName,
    maxAbs: Number.NaN,
    rel: Number.NaN,
    tol: 0,
    pass: true,
    skipped: true,
    note: `${NOT_IN_GOLDEN} (${what})`,
  };
}

/** Running max-abs error over chunks (e.g. the steps of a trajectory), relative to the max |ref| over all of them. */
export class ErrorAcc {
  maxAbs = 0;
  refMax = 0;
  worst = -1;
  lengthError: string | undefined;

  add(ref: ArrayLike<number>, got: ArrayLike<number>, tag = -1): void {
    if (ref.length !== got.length) {
      this.lengthError ??= `length ${got.length} vs reference ${ref.length}`;
      return;
    }
    for (let i = 0; i < ref.length; i++) {
      const r = ref[i]!;
      const d = Math.abs(r - got[i]!);
      // A NaN anywhere must fail the row, and comparisons alone would skip it.
      if (Number.isNaN(d) && !Number.isNaN(this.maxAbs)) {
        this.maxAbs = Number.NaN;
        this.worst = tag;
      } else if (d > this.maxAbs) {
        this.maxAbs = d;
        this.worst = tag;
      }
      if (Math.abs(r) > this.refMax) this.refMax = Math.abs(r);
    }
  }

  /** "worst step k" when some error was found in chunk k (for notes). */
  worstNote(label = "worst step"): string | undefined {
    return this.worst >= 0 && this.maxAbs > 0 ? `${label} ${this.worst}` : undefined;
  }

  row(section: string, caseName: string, tol: number, note?: string): Row {
    if (this.lengthError) return failRow(section, caseName, this.lengthError);
    const rel = this.refMax > 0 ? this.maxAbs / this.refMax : this.maxAbs;
    const row: Row = { section, case: caseName, maxAbs: this.maxAbs, rel, tol, pass: rel <= tol };
    if (note !== undefined) row.note = note;
    return row;
  }
}

export function compare(
  section: string,
  caseName: string,
  ref: ArrayLike<number>,
  got: ArrayLike<number>,
  tol: number,
  note?: string,
): Row {
  const acc = new ErrorAcc();
  acc.add(ref, got);
  return acc.row(section, caseName, tol, note);
}

/** Runs one case; a thrown error becomes a failing row whose note is the error's first line. */
export function guard(section: string, caseName: string, fn: () => Row | Row[]): Row[] {
  try {
    const out = fn();
    return Array.isArray(out) ? out : [out];
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    const note = err instanceof GoldenError ? msg : `error: ${msg}`;
    return [failRow(section, caseName, note.split("\n")[0]!)];
  }
}

/** Float32 elements of an array, checked to have `rank` dimensions. */
export function floats(arr: NpyArray, name: string, rank?: number): Float32Array {
  if (rank !== undefined && arr.shape.length !== rank) {
    throw new GoldenError(`${name}: expected ${rank} dimensions, got shape [${arr.shape.join(", ")}]`);
  }
  return npyToFloat32(arr);
}

/** NCHW host data → NHWC tensor (the project's layout). */
export function nchwToNhwc(data: Float32Array, shape: readonly number[]): Tensor4D {
  const [b, c, h, w] = shape as [number, number, number, number];
  return tf.tidy(() => tf.transpose(tf.tensor4d(data, [b, c, h, w]), [0, 2, 3, 1]) as Tensor4D);
}

/** NHWC tensor → NCHW host data, for comparing against reference arrays. */
export function nhwcToNchw(x: Tensor4D): Float32Array {
  const t = tf.transpose(x, [0, 3, 1, 2]);
  const out = t.dataSync() as Float32Array;
  t.dispose();
  return out;
}

/** Slice k of a stacked array [S, ...rest] as NHWC (rest = [B, C, H, W]). */
export function stepSlice(arr: NpyArray, name: string, k: number): Tensor4D {
  if (arr.shape.length !== 5) {
    throw new GoldenError(`${name}: expected [steps, B, C, H, W], got [${arr.shape.join(", ")}]`);
  }
  const rest = arr.shape.slice(1);
  const n = rest.reduce((a, b) => a * b, 1);
  const data = npyToFloat32(arr).subarray(k * n, (k + 1) * n);
  return nchwToNhwc(data, rest);
}
