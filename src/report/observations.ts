// Per-sample observations in the run folder (format: ./README.md, "Observations"): what every metric and interval
// is recomputed from. Scalars per sample go to observations.json; feature matrices to float32 .npy beside it (a
// few hundred samples of 64-d features are ~100 kB as .npy, several times that as JSON). Written before the
// cell's record.json, each file by tmp + rename, so a cell that exists has all of its observations.
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { encodeNpy, readNpy } from "../core/npy.ts";
import type { CellObservations, FloatRows, ReferenceObservations } from "../metrics/observations.ts";

export const OBSERVATIONS_FILE = "observations.json";

function writeAtomic(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

const matrixRef = z
  .object({ file: z.string().regex(/^[A-Za-z0-9._-]+\.npy$/), dim: z.number().int().positive() })
  .strict();

const cellObsSchema = z
  .object({
    version: z.literal(1),
    promptId: z.array(z.string()),
    suite: z.array(z.string().nullable()).optional(),
    features: matrixRef.optional(),
    featureSpace: z.string().optional(),
    clipScore: z.array(z.number()).optional(),
    clipScoreGuidance: z.array(z.number()).optional(),
    classProbs: matrixRef.optional(),
    correct: z.array(z.boolean()).optional(),
    failed: z.array(z.array(z.string())).optional(),
    guideScores: z.record(z.string(), z.array(z.number().nullable())).optional(),
    diversityClip: z.record(z.string(), z.number().nullable()).optional(),
    diversityPixel: z.record(z.string(), z.number().nullable()).optional(),
  })
  .strict();

const realObsSchema = z
  .object({
    version: z.literal(1),
    promptId: z.array(z.string()),
    features: matrixRef,
    featureSpace: z.string().optional(),
    floor: z
      .object({ promptId: z.array(z.string()), features: matrixRef })
      .strict()
      .optional(),
  })
  .strict();

function writeMatrix(dir: string, file: string, m: FloatRows): { file: string; dim: number } {
  writeAtomic(join(dir, file), encodeNpy(m.data, [m.data.length / m.dim, m.dim]));
  return { file, dim: m.dim };
}

function readMatrix(
  dir: string,
  ref: { file: string; dim: number },
  rowsWanted: number,
  what: string,
): FloatRows {
  const path = join(dir, ref.file);
  const a = readNpy(path);
  if (
    !(a.data instanceof Float32Array) ||
    a.shape.length !== 2 ||
    a.shape[1] !== ref.dim ||
    a.shape[0] !== rowsWanted
  ) {
    throw new Error(
      `run folder: ${path}: expected float32 [${rowsWanted}, ${ref.dim}] (${what}), got ${a.dtype} [${a.shape.join(", ")}]`,
    );
  }
  return { dim: ref.dim, data: a.data };
}

/** Write a cell's observations into `dir` (its cells/<id>/ folder). Call before writing record.json. */
export function writeCellObservations(dir: string, obs: CellObservations, featureSpace?: string): void {
  const { features, classProbs, ...scalars } = obs;
  const json: Record<string, unknown> = { version: 1, ...scalars };
  if (features) json.features = writeMatrix(dir, "features.npy", features);
  if (featureSpace) json.featureSpace = featureSpace;
  if (classProbs) json.classProbs = writeMatrix(dir, "class_probs.npy", classProbs);
  writeAtomic(join(dir, OBSERVATIONS_FILE), `${JSON.stringify(json)}\n`);
}

function parse<T>(schema: z.ZodType<T>, path: string): T {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new Error(`run folder: ${path} is not valid JSON: ${(e as Error).message}`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new Error(`run folder: ${path}: ${issues}`);
  }
  return r.data;
}

/** JSON has no NaN: `null` per sample stands for it (a classifier guide's score of a prompt without a class). */
export function nullsToNaN(scores: Record<string, (number | null)[]>): Record<string, number[]> {
  return Object.fromEntries(
    Object.entries(scores).map(([k, v]) => [k, v.map((x) => (x === null ? Number.NaN : x))]),
  );
}

/** A cell's observations, or undefined for cells written before observations existed. */
export function readCellObservations(dir: string): CellObservations | undefined {
  const path = join(dir, OBSERVATIONS_FILE);
  if (!existsSync(path)) return undefined;
  const o = parse(cellObsSchema, path);
  const n = o.promptId.length;
  const lengths: [string, unknown[] | undefined][] = [
    ["suite", o.suite],
    ["clipScore", o.clipScore],
    ["clipScoreGuidance", o.clipScoreGuidance],
    ["correct", o.correct],
    ["failed", o.failed],
  ];
  for (const [name, v] of Object.entries(o.guideScores ?? {})) lengths.push([`guideScores.${name}`, v]);
  for (const [k, v] of lengths) {
    if (v && v.length !== n)
      throw new Error(`run folder: ${path}: ${k} has ${v.length} entries for ${n} samples`);
  }
  const {
    version: _v,
    features,
    classProbs,
    featureSpace: _f,
    diversityClip,
    diversityPixel,
    guideScores,
    ...rest
  } = o;
  const finite = (r: Record<string, number | null> | undefined) =>
    r ? Object.fromEntries(Object.entries(r).filter((e): e is [string, number] => e[1] !== null)) : undefined;
  const out: CellObservations = { ...rest };
  if (guideScores) out.guideScores = nullsToNaN(guideScores);
  if (features) out.features = readMatrix(dir, features, n, "evaluation features");
  if (classProbs) out.classProbs = readMatrix(dir, classProbs, n, "class probabilities");
  const dc = finite(diversityClip);
  if (dc) out.diversityClip = dc;
  const dp = finite(diversityPixel);
  if (dp) out.diversityPixel = dp;
  return out;
}

export function writeReferenceObservations(
  dir: string,
  ref: ReferenceObservations,
  featureSpace?: string,
): void {
  const json: Record<string, unknown> = {
    version: 1,
    promptId: ref.promptId,
    features: writeMatrix(dir, "features.npy", ref.features),
  };
  if (featureSpace) json.featureSpace = featureSpace;
  if (ref.floor) {
    json.floor = {
      promptId: ref.floor.promptId,
      features: writeMatrix(dir, "floor_features.npy", ref.floor.features),
    };
  }
  writeAtomic(join(dir, OBSERVATIONS_FILE), `${JSON.stringify(json)}\n`);
}

export function readReferenceObservations(
  dir: string,
): { ref: ReferenceObservations; featureSpace?: string } | undefined {
  const path = join(dir, OBSERVATIONS_FILE);
  if (!existsSync(path)) return undefined;
  const o = parse(realObsSchema, path);
  const ref: ReferenceObservations = {
    promptId: o.promptId,
    features: readMatrix(dir, o.features, o.promptId.length, "real features"),
  };
  if (o.floor) {
    ref.floor = {
      promptId: o.floor.promptId,
      features: readMatrix(dir, o.floor.features, o.floor.promptId.length, "second real set's features"),
    };
  }
  return { ref, ...(o.featureSpace ? { featureSpace: o.featureSpace } : {}) };
}
