// Whether a cell of a run folder is finished. The runner writes record.json last and by rename, so a crash leaves
// either a whole record or none; but a record can still be damaged afterwards (a hand edit, a truncating copy, a
// full disk on another filesystem). A cell counts as finished only when its record parses, is a complete record
// of that cell, and its grid exists. Only the structure every record has is checked, not an exhaustive field list,
// so records may gain fields without invalidating older ones.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { asProvenance } from "./provenance.ts";

export type RecordState =
  | { state: "missing" }
  | { state: "invalid"; why: string }
  | { state: "finished"; record: Record<string, unknown> & { provenance: unknown } };

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** Checks an already-parsed record of cell `id`; returns what is wrong, or undefined when it is complete. */
export function recordProblem(record: unknown, id: string): string | undefined {
  if (!isObject(record)) return "record.json is not a JSON object";
  if (record.cellId !== id) return `record.json is for cell ${JSON.stringify(record.cellId)}, not ${id}`;
  for (const key of ["strategy", "sampler"])
    if (typeof record[key] !== "string") return `record.json: ${key} missing`;
  for (const key of ["steps", "nfe"])
    if (typeof record[key] !== "number") return `record.json: ${key} missing`;
  if (!isObject(record.metrics)) return "record.json: metrics missing";
  const grid = record.grid;
  if (
    !isObject(grid) ||
    typeof grid.n !== "number" ||
    !Array.isArray(grid.seeds) ||
    grid.seeds.length !== grid.n
  )
    return "record.json: grid incomplete";
  if (!asProvenance(record.provenance)) return "record.json: no provenance (made before it was recorded)";
  return undefined;
}

export function readRecord(out: string, id: string): RecordState {
  const dir = join(out, "cells", id);
  const path = join(dir, "record.json");
  if (!existsSync(path)) return { state: "missing" };
  let record: unknown;
  try {
    record = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    return { state: "invalid", why: `${path} is not valid JSON (truncated?): ${(e as Error).message}` };
  }
  const problem = recordProblem(record, id);
  if (problem) return { state: "invalid", why: `${path}: ${problem}` };
  if (!existsSync(join(dir, "grid.png")))
    return { state: "invalid", why: `${join(dir, "grid.png")} is missing` };
  return { state: "finished", record: record as Record<string, unknown> & { provenance: unknown } };
}
