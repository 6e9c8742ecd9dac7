// Provenance of a run: what produced its numbers, as content hashes rather than names. A model name says which
// folder was read, not what was in it; two shards sampled with different weights under one name would otherwise
// merge silently. env.json holds the run's provenance and every record.json a copy of it, so a resumed run, a
// merge, or a reader holding a single cell can tell what produced it. `--resume` and `merge` compare provenances
// key by key and name the first key that differs.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "../core/paths.ts";
import { modelsDir } from "../zoo/registry.ts";
import { DEFAULT_ZOO } from "../zoo/zoo.ts";
import type { SweepConfig } from "./config.ts";
import { guidesUsed } from "./guides.ts";
import { canonicalJson } from "./plan.ts";

export interface ModelProvenance {
  name: string;
  /** sha256 of model.safetensors, hex. */
  weights: string;
  /** sha256 of model.json, hex. */
  modelJson: string;
}

export interface Provenance {
  /** sha256 of the resolved config (canonical JSON of config.json's content). */
  config: string;
  /** Every model the run could read, by config key (absent optional models are simply not listed). */
  models: Record<string, ModelProvenance>;
  /** The OpenAI evaluation CLIP's weights when the config names one (sha256 of the file). */
  evalClipOpenai?: string;
  gitCommit?: string;
  /** Whether the checkout had uncommitted changes (recorded, not compared: a diff has no stable identity). */
  gitDirty?: boolean;
  /** Installed versions of the package's dependencies. */
  packages: Record<string, string>;
}

const fileHashes = new Map<string, { key: string; hash: string }>();

/** sha256 of a file, read in 1 MiB pieces; memoised by (size, mtime) so a sweep hashes each file once. */
export function sha256File(path: string): string {
  const st = statSync(path);
  const key = `${st.size}:${st.mtimeMs}`;
  const hit = fileHashes.get(path);
  if (hit?.key === key) return hit.hash;
  const h = createHash("sha256");
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(1 << 20);
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  const hash = h.digest("hex");
  fileHashes.set(path, { key, hash });
  return hash;
}

export const sha256Text = (s: string) => createHash("sha256").update(s).digest("hex");

export function configHash(config: SweepConfig): string {
  return sha256Text(canonicalJson(config));
}

function gitInfo(): { gitCommit?: string; gitDirty?: boolean } {
  try {
    const opts = {
      cwd: REPO_ROOT,
      encoding: "utf8" as const,
      stdio: ["ignore", "pipe", "ignore"] as ("ignore" | "pipe")[],
    };
    const gitCommit = execFileSync("git", ["rev-parse", "HEAD"], opts).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], opts).trim();
    return { gitCommit, gitDirty: dirty.length > 0 };
  } catch {
    return {};
  }
}

let packagesCache: Record<string, string> | undefined;

/** Installed versions of package.json's dependencies (what computes the numbers), read from node_modules. */
export function packageVersions(): Record<string, string> {
  if (packagesCache) return packagesCache;
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as {
    dependencies?: Record<string, string>;
  };
  const out: Record<string, string> = {};
  for (const name of Object.keys(pkg.dependencies ?? {}).sort()) {
    try {
      const v = JSON.parse(readFileSync(join(REPO_ROOT, "node_modules", name, "package.json"), "utf8")) as {
        version?: string;
      };
      out[name] = v.version ?? "unknown";
    } catch {
      out[name] = "missing";
    }
  }
  packagesCache = out;
  return out;
}

/** The provenance of a sweep of `config` with the models of `dir` as they are now. */
export function runProvenance(config: SweepConfig, dir = modelsDir()): Provenance {
  const models: Record<string, ModelProvenance> = {};
  const record = (key: string, name: string) => {
    const json = join(dir, name, "model.json");
    if (!existsSync(json)) return; // an absent optional model: nothing read, nothing to record
    const weights = join(dir, name, "model.safetensors");
    models[key] = {
      name,
      weights: existsSync(weights) ? sha256File(weights) : "missing",
      modelJson: sha256File(json),
    };
  };
  for (const [key, name] of Object.entries(config.models).sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (key === "evalClip" && config.evalClipOpenai) continue;
    record(key, name);
  }
  // Guides that strategies name (`model: NAME`) and clean-clip's default guide are read by the run too.
  const defaults = {
    classifier: config.models.classifier,
    clip: config.models.clip,
    cleanClip: DEFAULT_ZOO.cleanClip,
  };
  for (const name of guidesUsed(config.strategies, defaults)) {
    if (!Object.values(models).some((m) => m.name === name)) record(`guide:${name}`, name);
  }
  return {
    config: configHash(config),
    models,
    ...(config.evalClipOpenai ? { evalClipOpenai: sha256File(config.evalClipOpenai.weights) } : {}),
    ...gitInfo(),
    packages: packageVersions(),
  };
}

const short = (h: unknown) => (typeof h === "string" ? h.slice(0, 12) : JSON.stringify(h));

/**
 * The differences between two provenances that make their numbers incomparable, each naming the key (and the
 * model); empty when they agree. gitDirty is not compared (recorded only).
 */
export function provenanceDiff(a: Provenance, b: Provenance): string[] {
  const diffs: string[] = [];
  if (a.config !== b.config) diffs.push(`config: hash ${short(a.config)} vs ${short(b.config)}`);
  for (const key of [...new Set([...Object.keys(a.models), ...Object.keys(b.models)])].sort()) {
    const x = a.models[key];
    const y = b.models[key];
    if (!x || !y) {
      diffs.push(`models.${key}: ${x ? `'${x.name}'` : "absent"} vs ${y ? `'${y.name}'` : "absent"}`);
      continue;
    }
    if (x.name !== y.name) diffs.push(`models.${key}: '${x.name}' vs '${y.name}'`);
    if (x.weights !== y.weights)
      diffs.push(
        `models.${key} ('${y.name}'): weights differ (sha256 ${short(x.weights)} vs ${short(y.weights)})`,
      );
    if (x.modelJson !== y.modelJson)
      diffs.push(
        `models.${key} ('${y.name}'): model.json differs (sha256 ${short(x.modelJson)} vs ${short(y.modelJson)})`,
      );
  }
  if (a.evalClipOpenai !== b.evalClipOpenai)
    diffs.push(`evalClipOpenai: weights differ (${short(a.evalClipOpenai)} vs ${short(b.evalClipOpenai)})`);
  if (a.gitCommit !== b.gitCommit) diffs.push(`gitCommit: ${short(a.gitCommit)} vs ${short(b.gitCommit)}`);
  for (const name of [
    ...new Set([...Object.keys(a.packages ?? {}), ...Object.keys(b.packages ?? {})]),
  ].sort()) {
    if (a.packages?.[name] !== b.packages?.[name])
      diffs.push(`packages.${name}: ${a.packages?.[name] ?? "absent"} vs ${b.packages?.[name] ?? "absent"}`);
  }
  return diffs;
}

/** A provenance read back from JSON, or undefined when the object does not have one's shape. */
export function asProvenance(v: unknown): Provenance | undefined {
  if (!v || typeof v !== "object") return undefined;
  const p = v as Partial<Provenance>;
  return typeof p.config === "string" && p.models && typeof p.models === "object"
    ? (p as Provenance)
    : undefined;
}
