// Run folders that cannot be corrupted: the lock, graceful stop, provenance, record validation and merge checks,
// with real child processes where the issue is between processes (two sweeps, a signal).
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { checkNumberFlags, FLAGS } from "../src/cli/flags.ts";
import { runSample } from "../src/cli/sample.ts";
import { initEngine } from "../src/core/engine.ts";
import { neutraliseCsvCell } from "../src/report/csv.ts";
import { loadSweepConfig } from "../src/sweep/config.ts";
import { acquireLock, LOCK_FILE } from "../src/sweep/lock.ts";
import { mergeRuns } from "../src/sweep/merge.ts";
import { runSweep, runSweepResumingOrSettingAside } from "../src/sweep/runner.ts";
import { loadZooModel, modelInfo } from "../src/zoo/registry.ts";
import { configWriter, csvWithoutTiming } from "./helpers/run-folder.ts";
import { makeTinyZoo } from "./helpers/tiny-zoo.ts";

const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(ROOT, "bin", "guidance-lab.js");
const dir = mkdtempSync(join(tmpdir(), "gl-runfolder-"));
const models = join(dir, "models");
after(() => rmSync(dir, { recursive: true, force: true }));

// The smallest sweep with more than one cell: 3 cells of 2 images at 2 steps.
const TINY = `prompts: ["a red circle"]
strategies:
  - { kind: cfg, scales: [1, 2, 3] }
steps: 2
samplesPerPrompt: 2
batchSize: 1
metrics: [pixel_diversity, prompt_accuracy, cost]
`;

const writeConfig = configWriter(dir);

const records = (out: string) =>
  existsSync(join(out, "cells"))
    ? readdirSync(join(out, "cells")).filter((id) => existsSync(join(out, "cells", id, "record.json")))
    : [];

interface Child {
  proc: ChildProcess;
  out: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `guidance-lab ARGS` through the published entry point, as a user runs it. */
function cli(args: string[], env: Record<string, string> = {}): Child {
  const proc = spawn(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    env: { ...process.env, GUIDANCE_LAB_MODELS: models, GUIDANCE_LAB_BACKEND: "wasm", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let text = "";
  proc.stdout!.on("data", (d) => {
    text += String(d);
  });
  proc.stderr!.on("data", (d) => {
    text += String(d);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    proc.on("exit", (code, signal) => r({ code, signal })),
  );
  return { proc, out: () => text, exited };
}

async function until(what: string, cond: () => boolean, child?: Child, ms = 120_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (child) assert.equal(child.proc.exitCode, null, `child ended before ${what}: ${child.out()}`);
    assert.ok(Date.now() - t0 < ms, `${what} in time`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

before(async () => {
  await initEngine("wasm", { quiet: true });
  process.env.GUIDANCE_LAB_QUIET = "1";
  await makeTinyZoo(dir);
  process.env.GUIDANCE_LAB_MODELS = models;
});

describe("run-folder lock", () => {
  it("refuses a live holder, reports a stale lock, and --force takes that over", () => {
    const folder = join(dir, "lock-unit");
    mkdirSync(folder);
    const held = acquireLock(folder);
    assert.throws(() => acquireLock(folder), new RegExp(`in use: locked by pid ${process.pid} on `), "live");
    assert.throws(
      () => acquireLock(folder, { force: true }),
      /in use/,
      "--force never evicts a live process",
    );
    held.release();
    assert.ok(!existsSync(join(folder, LOCK_FILE)), "released");
    // A lock left by a process that is gone: a pid that has just exited.
    const gone = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]).stdout;
    const pid = Number(String(gone));
    writeFileSync(
      join(folder, LOCK_FILE),
      JSON.stringify({ pid, host: hostname(), startedAt: "2026-01-01T00:00:00Z", command: "sweep x" }),
    );
    assert.throws(() => acquireLock(folder), /no longer running.*--force/, "stale lock reported");
    const taken = acquireLock(folder, { force: true });
    assert.equal(JSON.parse(readFileSync(join(folder, LOCK_FILE), "utf8")).pid, process.pid, "taken over");
    taken.release();
  });

  it("a sweep reports a stale lock and runs with --force", { timeout: 120_000 }, async () => {
    const out = join(dir, "stale");
    mkdirSync(out);
    const gone = Number(
      String(spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]).stdout),
    );
    const stale = { pid: gone, host: hostname(), startedAt: "2026-01-01T00:00:00Z", command: "sweep x" };
    writeFileSync(join(out, LOCK_FILE), JSON.stringify(stale));
    const config = writeConfig("stale.yaml", TINY);
    await assert.rejects(
      runSweep(config, { out, quiet: true }),
      new RegExp(`lock left by pid ${gone} .*no longer running.*--force`),
      "refused without --force",
    );
    const r = await runSweep(config, { out, quiet: true, force: true });
    assert.equal(r.finished.length, 3, "--force takes the folder over");
    assert.ok(!existsSync(join(out, LOCK_FILE)), "and releases it at the end");
  });
});

describe("concurrent sweeps and graceful stop (child processes)", () => {
  it("two sweeps into one folder: the second is refused; SIGTERM mid-sweep: exit 143, no orphan, resume = uninterrupted", {
    timeout: 300_000,
  }, async () => {
    // Enough steps that a signal lands inside a cell (batches of one image, checked between batches).
    const slow = TINY.replace("steps: 2", "steps: 20");
    const out = join(dir, "two");
    // Seed 0 and seed 1 into one folder: the mix the lock exists to prevent.
    const configA = writeConfig("two-a.yaml", `${slow}seed: 0\n`);
    const a = cli(["sweep", configA, "--out", out]);
    await until("the first sweep takes the lock", () => existsSync(join(out, LOCK_FILE)), a);
    // Paused, so that it holds the lock however slowly the second one starts on a loaded machine.
    a.proc.kill("SIGSTOP");
    const lock = JSON.parse(readFileSync(join(out, LOCK_FILE), "utf8"));
    assert.equal(lock.pid, a.proc.pid, "the lock names the first sweep's pid");
    assert.ok(lock.host && lock.startedAt, "and its host and start time");
    for (const extra of [[], ["--resume"]]) {
      const b = cli(["sweep", writeConfig("two-b.yaml", `${slow}seed: 1\n`), "--out", out, ...extra]);
      const rb = await b.exited;
      assert.equal(rb.code, 2, `second sweep ${extra.join(" ")} refused: ${b.out()}`);
      assert.match(b.out(), new RegExp(`in use: locked by pid ${a.proc.pid}`), "naming the holder");
    }
    a.proc.kill("SIGCONT");

    await until("the first cell", () => records(out).length > 0, a);
    a.proc.kill("SIGTERM");
    const r = await a.exited;
    assert.equal(r.code, 143, `exit status 128 + SIGTERM: ${a.out()}`);
    assert.ok(!alive(a.proc.pid!), "the sweep's process is gone (it runs in-process: nothing orphaned)");
    const done = records(out).length;
    assert.ok(done >= 1 && done < 3, `stopped part-way (${done} of 3 cells)`);
    const env = JSON.parse(readFileSync(join(out, "env.json"), "utf8"));
    assert.equal(env.interrupted, true, "env.json says interrupted");
    assert.equal(env.signal, "SIGTERM", "and by what");
    assert.equal(
      JSON.parse(readFileSync(join(out, "config.json"), "utf8")).seed,
      0,
      "config.json is the first's",
    );
    assert.ok(!existsSync(join(out, LOCK_FILE)), "lock released");
    for (const id of readdirSync(join(out, "cells")))
      assert.ok(
        readdirSync(join(out, "cells", id)).every((f) => !f.includes(".tmp-")),
        `${id}: no half-written file left`,
      );
    const resumed = await runSweep(configA, { out, resume: true, quiet: true });
    assert.equal(resumed.skipped.length, done, "finished cells kept");
    assert.equal(resumed.remaining.length, 0, "the rest sampled");
    const full = join(dir, "two-full");
    await runSweep(configA, { out: full, quiet: true });
    assert.equal(csvWithoutTiming(out), csvWithoutTiming(full), "same results.csv as an uninterrupted run");
  });
});

/** A copy of the models folder with one weight of the denoiser changed (same size, same header). */
function alteredModels(): string {
  const altered = join(dir, "models-altered");
  cpSync(models, altered, { recursive: true });
  const file = join(altered, "denoiser", "model.safetensors");
  const buf = readFileSync(file);
  const data = 8 + Number(buf.readBigUInt64LE(0));
  buf.writeFloatLE(buf.readFloatLE(data) + 0.25, data);
  writeFileSync(file, buf);
  return altered;
}

describe("provenance", () => {
  let shards: string[] = [];
  let full = "";
  const config = () => writeConfig("prov.yaml", TINY);

  before(async () => {
    full = join(dir, "prov-full");
    await runSweep(config(), { out: full, quiet: true });
    shards = [1, 2, 3].map((i) => join(dir, `prov-shard${i}`));
    for (const [i, s] of shards.entries())
      await runSweep(config(), { out: s, shard: `${i + 1}/3`, quiet: true });
  });

  it("is recorded in env.json and every record: weights and model.json hashes, commit, config, packages", () => {
    const env = JSON.parse(readFileSync(join(full, "env.json"), "utf8"));
    const p = env.provenance;
    assert.match(p.config, /^[0-9a-f]{64}$/, "config hash");
    assert.match(p.models.denoiser.weights, /^[0-9a-f]{64}$/, "denoiser weights hash");
    assert.match(p.models.denoiser.modelJson, /^[0-9a-f]{64}$/, "denoiser model.json hash");
    assert.match(p.packages["@tensorflow/tfjs-core"], /^\d+\.\d+/, "package versions");
    assert.ok("gitCommit" in p || !existsSync(join(ROOT, ".git")), "commit");
    for (const id of records(full)) {
      const rec = JSON.parse(readFileSync(join(full, "cells", id, "record.json"), "utf8"));
      assert.deepEqual(rec.provenance, p, `${id}: record carries the run's provenance`);
    }
  });

  it("merge refuses a shard sampled with altered weights, naming the model", {
    timeout: 120_000,
  }, async () => {
    const bad = join(dir, "prov-shard2-altered");
    const saved = process.env.GUIDANCE_LAB_MODELS;
    process.env.GUIDANCE_LAB_MODELS = alteredModels();
    try {
      await runSweep(config(), { out: bad, shard: "2/3", quiet: true });
    } finally {
      process.env.GUIDANCE_LAB_MODELS = saved;
    }
    const out = join(dir, "prov-merged-bad");
    assert.throws(
      () => mergeRuns(out, [shards[0]!, bad, shards[2]!]),
      /models\.denoiser \('denoiser'\): weights differ/,
      "merge names the model",
    );
    assert.ok(!existsSync(out), "a refused merge writes nothing");
    assert.ok(
      readdirSync(dir).every((f) => !f.includes(".merge-")),
      "and leaves no temporary folder",
    );
  });

  it("merge refuses a missing shard unless --partial; the full set gives the unsharded CSV", () => {
    const out = join(dir, "prov-merged-partial");
    assert.throws(
      () => mergeRuns(out, [shards[0]!, shards[2]!]),
      /1 of 3 planned cells are in no shard.*shard\(s\) 2\/3 not given.*--partial/,
      "incomplete set refused",
    );
    assert.ok(!existsSync(out), "nothing written");
    const partial = mergeRuns(out, [shards[0]!, shards[2]!], { partial: true });
    assert.equal(partial.missing.length, 1, "--partial merges what there is and lists the rest");
    assert.equal(
      JSON.parse(readFileSync(join(out, "env.json"), "utf8")).partial,
      true,
      "env.json says partial",
    );
    const whole = join(dir, "prov-merged");
    mergeRuns(whole, shards);
    assert.equal(csvWithoutTiming(whole), csvWithoutTiming(full), "complete merge = unsharded run");
    assert.throws(() => mergeRuns(whole, shards), /not empty/, "never merges over an existing folder");
  });

  it("--resume refuses altered weights and model.json, naming the model", { timeout: 120_000 }, async () => {
    const out = join(dir, "prov-resume");
    await runSweep(config(), { out, limit: 1, quiet: true });
    const saved = process.env.GUIDANCE_LAB_MODELS;
    process.env.GUIDANCE_LAB_MODELS = alteredModels();
    try {
      await assert.rejects(
        runSweep(config(), { out, resume: true, quiet: true }),
        /--resume: .*models\.denoiser \('denoiser'\): weights differ/,
        "weights",
      );
    } finally {
      process.env.GUIDANCE_LAB_MODELS = saved;
    }
    const json = join(dir, "models-json");
    cpSync(models, json, { recursive: true });
    const mj = join(json, "denoiser", "model.json");
    writeFileSync(mj, readFileSync(mj, "utf8").replace(/"wallSeconds": [0-9.e-]+/, '"wallSeconds": 12345'));
    process.env.GUIDANCE_LAB_MODELS = json;
    try {
      await assert.rejects(
        runSweep(config(), { out, resume: true, quiet: true }),
        /models\.denoiser \('denoiser'\): model\.json differs/,
        "model.json",
      );
    } finally {
      process.env.GUIDANCE_LAB_MODELS = saved;
    }
    assert.equal(records(out).length, 1, "the refused resumes changed nothing");
  });

  it("npm start's resume keeps a run made with other weights aside and starts afresh", {
    timeout: 120_000,
  }, async () => {
    const out = join(dir, "prov-aside");
    await runSweep(config(), { out, limit: 1, quiet: true });
    const saved = process.env.GUIDANCE_LAB_MODELS;
    process.env.GUIDANCE_LAB_MODELS = alteredModels();
    try {
      const r = await runSweepResumingOrSettingAside(config(), out, { quiet: true });
      assert.equal(r.finished.length, 3, "a fresh run of every cell");
      assert.ok(r.setAside && records(r.setAside).length === 1, "the old run kept whole beside it");
    } finally {
      process.env.GUIDANCE_LAB_MODELS = saved;
    }
  });

  it("a truncated record.json is not finished: resume moves it aside and samples the cell again", {
    timeout: 120_000,
  }, async () => {
    const out = join(dir, "prov-truncated");
    const first = await runSweep(config(), { out, limit: 2, quiet: true });
    const id = first.finished[0]!;
    const path = join(out, "cells", id, "record.json");
    const text = readFileSync(path, "utf8");
    writeFileSync(path, text.slice(0, Math.floor(text.length / 2)));
    const r = await runSweep(config(), { out, resume: true, quiet: true });
    assert.ok(r.finished.includes(id), "the truncated cell was sampled again");
    assert.equal(r.skipped.length, 1, "the whole one was kept");
    assert.ok(
      readdirSync(join(out, "cells", id)).some((f) => f.startsWith("record.json.invalid-")),
      "the damaged record was kept aside, not deleted",
    );
    assert.equal(csvWithoutTiming(out), csvWithoutTiming(full), "same results as an uninterrupted run");
  });
});

/** A copy of the tiny denoiser under `name` in a fresh models folder, for damaging. */
function modelCopy(name: string): { dir: string; model: string } {
  const root = join(dir, `models-${name}`);
  cpSync(join(models, "denoiser"), join(root, "denoiser"), { recursive: true });
  return { dir: root, model: join(root, "denoiser") };
}

/** Rewrites a safetensors header through `edit` (data offsets are relative to the data, so they stay valid). */
function editHeader(file: string, edit: (h: Record<string, { dtype: string }>) => void): void {
  const buf = readFileSync(file);
  const len = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + len).toString("utf8"));
  edit(header);
  const text = Buffer.from(JSON.stringify(header));
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(text.length));
  writeFileSync(file, Buffer.concat([size, text, buf.subarray(8 + len)]));
}

describe("every error before sampling, naming the file and key", () => {
  const fails = async (name: string, text: string, pattern: RegExp) => {
    const out = join(dir, `bad-${name}`);
    await assert.rejects(runSweep(writeConfig(`${name}.yaml`, text), { out, quiet: true }), pattern, name);
    assert.ok(!existsSync(out), `${name}: nothing written`);
  };

  it("checks each metric's prerequisites against the config", async () => {
    await fails(
      "pr",
      TINY.replace("samplesPerPrompt: 2", "samplesPerPrompt: 1").replace(
        "pixel_diversity,",
        "precision_recall,",
      ),
      /pr\.yaml: metrics: precision_recall needs at least 4 samples per cell .*samplesPerPrompt 1 = 1: raise samplesPerPrompt/,
    );
    await fails(
      "acc",
      TINY.replace('["a red circle"]', '["a red circle", "=HYPERLINK(1)"]'),
      /acc\.yaml: metrics: prompt_accuracy judges prompts from the world .*prompt 1 \('=HYPERLINK\(1\)'\) is free text/,
    );
    await fails(
      "fd",
      TINY.replace("pixel_diversity, prompt_accuracy,", "fd, kid,").replace('"a red circle"', '"hello"'),
      /fd\.yaml: metrics: fd needs at least 2 real images.*; kid needs at least 2/,
    );
  });

  it("says which type a key expects, and bounds steps by the model's", async () => {
    await fails(
      "five",
      TINY.replace("steps: 2", "steps: five"),
      /five\.yaml: steps: expected an integer or a list, got string 'five'/,
    );
    await fails(
      "frac",
      TINY.replace("samplesPerPrompt: 2", "samplesPerPrompt: 1.5"),
      /samplesPerPrompt: expected an integer, got number 1\.5/,
    );
    await fails(
      "many",
      TINY.replace("steps: 2", "steps: 10000"),
      /many\.yaml: steps: 10000 is more than the 1000 diffusion steps the denoiser 'denoiser' was trained with/,
    );
  });

  it("restricts model names to names and resolves `out` against the config's folder", async () => {
    await fails(
      "dots",
      `${TINY}models: { denoiser: ../models/denoiser }\n`,
      /dots\.yaml: models\.denoiser: expected a model name/,
    );
    assert.throws(() => modelInfo("../denoiser"), /model '\.\.\/denoiser': not a model name/, "registry too");
    mkdirSync(join(dir, "sub"), { recursive: true });
    const loaded = loadSweepConfig(writeConfig(join("sub", "out.yaml"), `${TINY}out: runs/here\n`));
    assert.equal(loaded.out, join(dir, "sub", "runs", "here"), "out is relative to the config file");
  });

  it("validates model.json by its schema, naming the file and key", () => {
    for (const key of ["diffusion", "world"]) {
      const { dir: root, model } = modelCopy(`no-${key}`);
      const json = JSON.parse(readFileSync(join(model, "model.json"), "utf8"));
      delete json[key];
      writeFileSync(join(model, "model.json"), JSON.stringify(json));
      assert.throws(
        () => loadZooModel("denoiser", root),
        new RegExp(`denoiser/model\\.json: ${key}: expected a mapping of keys`),
        `missing ${key}`,
      );
    }
  });

  it("refuses weights relabelled to another dtype of the same size, and non-finite weights", () => {
    const relabel = modelCopy("bf16");
    editHeader(join(relabel.model, "model.safetensors"), (h) => {
      const first = Object.keys(h).find((k) => k !== "__metadata__")!;
      h[first]!.dtype = "BF16"; // F16 and BF16 are both 2 bytes: every size check passes
    });
    assert.throws(
      () => loadZooModel("denoiser", relabel.dir),
      /labelled BF16 but the file was written as F16/,
    );
    const toInt = modelCopy("i32");
    editHeader(join(toInt.model, "model.safetensors"), (h) => {
      for (const v of Object.values(h)) if (v.dtype) v.dtype = "F16";
      h.__metadata__ = {} as never;
      const first = Object.keys(h).find((k) => k !== "__metadata__")!;
      const t = h[first] as unknown as { dtype: string; shape: number[] };
      // Two F16 values as one I32: same bytes, a shape with half the elements.
      if (t.shape.at(-1)! % 2 === 0) {
        t.dtype = "I32";
        t.shape = [...t.shape.slice(0, -1), t.shape.at(-1)! / 2];
      }
    });
    assert.throws(() => loadZooModel("denoiser", toInt.dir), /is I32; zoo weights are floating point/);
    const nan = modelCopy("nan");
    const file = join(nan.model, "model.safetensors");
    const buf = readFileSync(file);
    buf.writeUInt16LE(0x7e00, 8 + Number(buf.readBigUInt64LE(0))); // an F16 NaN as the first weight
    writeFileSync(file, buf);
    assert.throws(() => loadZooModel("denoiser", nan.dir), /holds NaN at index 0/);
  });

  it("neutralises spreadsheet formulas in results.csv", { timeout: 60_000 }, async () => {
    const out = join(dir, "csv");
    const config = TINY.replace(
      "{ kind: cfg, scales: [1, 2, 3] }",
      `{ kind: negative, scales: [2], negativePrompt: '=HYPERLINK("http://x","y")' }`,
    );
    await runSweep(writeConfig("csv.yaml", config), { out, quiet: true });
    const csv = readFileSync(join(out, "results.csv"), "utf8");
    assert.ok(csv.includes(`'=HYPERLINK(`), `the formula is text: ${csv}`);
    assert.ok(!/(^|,)"?=HYPERLINK/m.test(csv), "no cell starts with =");
    for (const c of ["=1", "+1", "-1", "@x", "\tx", "\rx"])
      assert.equal(neutraliseCsvCell(c), `'${c}`, JSON.stringify(c));
    assert.equal(neutraliseCsvCell(-1), -1, "numbers stay numbers");
    assert.equal(neutraliseCsvCell("a=1"), "a=1", "only a leading character matters");
  });

  it("validates numeric flags, naming the flag and the range", { timeout: 120_000 }, async () => {
    const cases: [string[], RegExp][] = [
      [["--steps", "0"], /--steps 0: expected an integer ≥ 1/],
      [["--steps", "five"], /--steps 'five' \(not a number\): expected an integer ≥ 1/],
      [["--n", "0"], /--n 0: expected an integer from 1 to 256/],
      [["--n", "100000"], /--n 100000: expected an integer from 1 to 256/],
    ];
    for (const [flags, pattern] of cases) {
      // As yargs hands them over: numbers, NaN for what is not one.
      const argv = { [flags[0]!.slice(2)]: Number(flags[1]) };
      assert.throws(() => checkNumberFlags(argv, FLAGS.sample, flags), pattern, flags.join(" "));
    }
    // Through the real command line once: exit status 2 and the message, before any model loads.
    const c = cli(["sample", "--prompt", "a red circle", "--steps", "0"]);
    assert.equal((await c.exited).code, 2, c.out());
    assert.match(c.out(), /--steps 0: expected an integer ≥ 1/);
    // --steps beyond the model's diffusion steps is checked once the model is known.
    await assert.rejects(
      runSample({
        model: "denoiser",
        prompt: "a red circle",
        strategy: "cfg",
        steps: 10000,
        sampler: "ddpm",
        eta: 0,
        n: 1,
        seed: 0,
        out: join(dir, "sample-out"),
        runtime: "tfjs",
      }),
      /--steps 10000: expected an integer from 1 to 1000/,
    );
  });
});
