import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { initEngine } from "../src/core/engine.ts";
import { loadSweepConfig, SCHEMA_PATH, sweepJsonSchemaText } from "../src/sweep/config.ts";
import { mergeRuns } from "../src/sweep/merge.ts";
import { parseShard, planCells, shardCells } from "../src/sweep/plan.ts";
import { runSweep } from "../src/sweep/runner.ts";
import { configWriter, csvWithoutTiming } from "./helpers/run-folder.ts";
import { makeTinyZoo } from "./helpers/tiny-zoo.ts";

const dir = mkdtempSync(join(tmpdir(), "gl-sweep-"));
const models = join(dir, "models");
after(() => rmSync(dir, { recursive: true, force: true }));

const CONFIG = `prompts: ["a red circle", { suite: colour, n: 1, seed: 3 }]
strategies:
  - { kind: cfg, scales: [1, 3] }
steps: [2, 3]
sampler: ddpm
samplesPerPrompt: 2
batchSize: 3
seed: 7
metrics: [pixel_diversity, prompt_accuracy, cost]
`;

const writeConfig = configWriter(dir);

before(async () => {
  await initEngine("wasm", { quiet: true });
  process.env.GUIDANCE_LAB_QUIET = "1";
  await makeTinyZoo(dir);
  process.env.GUIDANCE_LAB_MODELS = models;
});

describe("sweep config", () => {
  const fails = async (text: string, pattern: RegExp, what: string) => {
    const path = writeConfig("bad.yaml", text);
    const out = join(dir, `bad-${Math.random().toString(36).slice(2)}`);
    await assert.rejects(runSweep(path, { out, quiet: true }), pattern, what);
    assert.ok(!existsSync(out), `${what}: nothing written before the error`);
  };

  it("rejects typos, wrong types, unknown strategies and empty grids before sampling, naming the key", async () => {
    await fails(`${CONFIG}sampels: 3\n`, /bad\.yaml: sampels: unknown key/, "typo key");
    await fails(
      CONFIG.replace("samplesPerPrompt: 2", "samplesPerPrompt: two"),
      /samplesPerPrompt:/,
      "wrong type",
    );
    await fails(
      CONFIG.replace("kind: cfg,", "kind: cfgg,"),
      /strategies\.0: kind: unknown strategy 'cfgg'/,
      "kind",
    );
    await fails(
      CONFIG.replace("kind: cfg, scales: [1, 3]", "kind: cfg, scales: [1, 3], phi: 0.7"),
      /strategies\.0 'cfg': phi: unknown key/,
      "param",
    );
    await fails(
      CONFIG.replace(/strategies:\n.*\n/, "strategies: []\n"),
      /strategies:.*(>=1|too small)/i,
      "empty grid",
    );
    await fails(CONFIG.replace("scales: [1, 3]", "scales: []"), /strategies\.0\.scales/, "no scales");
    await fails(
      `${CONFIG}models: { classifier: nope }\n`,
      /models\.classifier: model 'nope'/,
      "unknown model",
    );
    await fails(
      CONFIG.replace("kind: cfg,", "kind: classifier,"),
      /needs models\.classifier/,
      "missing model",
    );
    await fails(
      CONFIG.replace("pixel_diversity,", "clip_score,"),
      /metrics: .*clip_score needs evalEmbedder/,
      "metric",
    );
    await fails(CONFIG.replace("pixel_diversity,", "pixel_diversty,"), /metrics\.0/, "unknown metric");
    await fails(`${CONFIG}runtime: fast\n`, /runtime/, "unknown runtime");
  });

  it("expands the grid into stable, unique, safe ids and shards them exactly", () => {
    const { config, source } = loadSweepConfig(writeConfig("ok.yaml", CONFIG));
    const cells = planCells(config, source);
    assert.equal(cells.length, 4, "2 scales x 2 step counts");
    assert.ok(
      cells.every((c) => /^[A-Za-z0-9._=+-]+$/.test(c.id)),
      "ids are safe folder names",
    );
    assert.match(cells[0]!.id, /^cfg-s1-2-ddpm-[0-9a-f]{6}$/, "readable id with a parameter hash");
    const again = planCells(loadSweepConfig(writeConfig("ok2.yaml", CONFIG)).config, source);
    assert.deepEqual(
      again.map((c) => c.id),
      cells.map((c) => c.id),
      "ids are stable",
    );
    const parts = [1, 2, 3].flatMap((i) => shardCells(cells, parseShard(`${i}/3`)).map((c) => c.id));
    assert.deepEqual([...parts].sort(), cells.map((c) => c.id).sort(), "shards partition the cells");
    assert.throws(() => parseShard("0/3"), /--shard 0\/3/, "shards are 1-based");
  });

  it("ships an up-to-date JSON Schema and a valid quickstart config", () => {
    assert.equal(
      readFileSync(SCHEMA_PATH, "utf8"),
      sweepJsonSchemaText(),
      "configs/sweep.schema.json is current",
    );
    const q = loadSweepConfig(resolve(import.meta.dirname, "..", "configs", "quickstart.yaml"));
    assert.equal(planCells(q.config, q.source).length, 18, "3 strategies x 3 scales x 2 step counts");
  });
});

describe("sweep runs", () => {
  let full = "";
  const config = () => writeConfig("sweep.yaml", CONFIG);

  it("writes the run folder and refuses to overwrite it", { timeout: 300_000 }, async () => {
    full = join(dir, "full");
    const r = await runSweep(config(), { out: full, quiet: true });
    assert.equal(r.finished.length, 4, "every cell sampled");
    for (const id of r.cells) {
      assert.ok(existsSync(join(full, "cells", id, "grid.png")), `${id}: grid written`);
      const rec = JSON.parse(readFileSync(join(full, "cells", id, "record.json"), "utf8"));
      assert.equal(rec.grid.n, 4, `${id}: 2 prompts x 2 samples`);
      assert.ok(rec.nfe > 0, `${id}: nfe counted`);
    }
    for (const id of r.cells) {
      const obs = JSON.parse(readFileSync(join(full, "cells", id, "observations.json"), "utf8"));
      assert.equal(obs.promptId.length, 4, `${id}: observations per sample`);
      assert.equal(obs.correct.length, 4, `${id}: oracle verdicts kept`);
    }
    const header = readFileSync(join(full, "results.csv"), "utf8").split("\n")[0]!.split(",");
    for (const col of ["n", "accuracy", "accuracy_lo", "accuracy_hi", "diversity_pixel_lo"])
      assert.ok(header.includes(col), `results.csv has ${col}`);
    const env = JSON.parse(readFileSync(join(full, "env.json"), "utf8"));
    assert.equal(env.backend, "wasm", "env.json names the backend");
    assert.ok(["onnx", "tfjs"].includes(env.runtime), `env.json names the runtime (${env.runtime})`);
    assert.ok(existsSync(join(full, "index.html")), "report built");
    await assert.rejects(
      runSweep(config(), { out: full, quiet: true }),
      /not empty.*--resume/,
      "no overwrite",
    );
  });

  it("keeps eval-CLIP features, the real set and its second set, so FD, KID and the floor are rebuilt from the folder", {
    timeout: 300_000,
  }, async () => {
    const text = CONFIG.replace("steps: [2, 3]", "steps: 2")
      .replace("scales: [1, 3]", "scales: [3]")
      .replace(
        "metrics: [pixel_diversity, prompt_accuracy, cost]",
        "metrics: [clip_score, fd, kid, precision_recall, diversity]",
      );
    const out = join(dir, "observed");
    // Its own models folder with the evaluation CLIP: the others test that metrics needing it are refused.
    mkdirSync(join(dir, "with-eval"), { recursive: true });
    const withEval = await makeTinyZoo(join(dir, "with-eval"), ["denoiser", "eval-clip"]);
    const previous = process.env.GUIDANCE_LAB_MODELS;
    process.env.GUIDANCE_LAB_MODELS = withEval;
    let r: Awaited<ReturnType<typeof runSweep>>;
    try {
      r = await runSweep(writeConfig("observed.yaml", text), { out, quiet: true });
    } finally {
      process.env.GUIDANCE_LAB_MODELS = previous;
    }
    const id = r.cells[0]!;
    const rec = JSON.parse(readFileSync(join(out, "cells", id, "record.json"), "utf8"));
    const { readRun } = await import("../src/report/run-folder.ts");
    const { runIntervals } = await import("../src/report/intervals.ts");
    const stats = runIntervals(readRun(out))!;
    const st = stats.byId.get(id)!.stats;
    for (const key of ["fd", "kid", "clip_score", "precision", "recall"]) {
      assert.ok(
        Math.abs(st[key]!.value - rec.metrics[key]) <= 1e-6 * Math.max(1, Math.abs(rec.metrics[key])),
        `${key}: rebuilt from observations ${st[key]!.value} = recorded ${rec.metrics[key]}`,
      );
    }
    assert.match(stats.featureSpace ?? "", /^eval-CLIP \d+-d$/, "feature space recorded");
    assert.ok(stats.floor && Number.isFinite(stats.floor.stats.fd!.value), "real-vs-real floor measured");
    const header = readFileSync(join(out, "results.csv"), "utf8").split("\n")[0]!.split(",");
    for (const col of ["fd_lo", "fd_hi", "fd_floor", "kid", "kid_floor"])
      assert.ok(header.includes(col), col);
  });

  it("takes the runtime from the config key; the caller's choice wins", { timeout: 300_000 }, async () => {
    const one = CONFIG.replace("steps: [2, 3]", "steps: 2").replace("scales: [1, 3]", "scales: [3]");
    const path = writeConfig("rt.yaml", `${one}runtime: tfjs\n`);
    const a = join(dir, "rt-config");
    await runSweep(path, { out: a, quiet: true });
    assert.equal(JSON.parse(readFileSync(join(a, "env.json"), "utf8")).runtime, "tfjs", "config key used");
    const b = join(dir, "rt-caller");
    await runSweep(writeConfig("rt2.yaml", `${one}runtime: onnx\n`), {
      out: b,
      quiet: true,
      runtime: "tfjs",
    });
    assert.equal(
      JSON.parse(readFileSync(join(b, "env.json"), "utf8")).runtime,
      "tfjs",
      "caller's choice used",
    );
    assert.equal(
      readFileSync(join(a, "config.json"), "utf8"),
      readFileSync(join(b, "config.json"), "utf8"),
      "the runtime is not part of the resolved config (runs on either runtime merge)",
    );
  });

  it("runs every registry sampler as a grid axis; cfg++ with ddpm is refused before sampling", {
    timeout: 300_000,
  }, async () => {
    const names = [
      "ddim",
      "euler",
      "euler_ancestral",
      "heun",
      "dpm_2",
      "dpmpp_2m",
      "dpmpp_2m_sde",
      "dpmpp_3m_sde",
      "unipc",
    ];
    const one = CONFIG.replace("steps: [2, 3]", "steps: 3")
      .replace("scales: [1, 3]", "scales: [3]")
      .replace("sampler: ddpm", `sampler: [${names.join(", ")}]`)
      .replace("metrics: [pixel_diversity, prompt_accuracy, cost]", "metrics: [cost]");
    const out = join(dir, "samplers");
    const r = await runSweep(writeConfig("samplers.yaml", one), { out, quiet: true });
    assert.equal(r.finished.length, names.length);
    for (const id of r.finished) {
      const rec = JSON.parse(readFileSync(join(out, "cells", id, "record.json"), "utf8"));
      // cfg: 2 evaluations per model call; heun and dpm_2 call twice per step but once on the last
      const calls = rec.sampler === "heun" || rec.sampler === "dpm_2" ? 5 : 3;
      assert.equal(rec.nfe, 2 * calls, `${rec.sampler} NFE`);
      if (["euler_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde"].includes(rec.sampler)) assert.equal(rec.eta, 1);
    }
    const bad = join(dir, "cfgpp-ddpm");
    await assert.rejects(
      runSweep(
        writeConfig(
          "cfgpp.yaml",
          CONFIG.replace("{ kind: cfg, scales: [1, 3] }", "{ kind: cfg++, scale: 0.5 }"),
        ),
        {
          out: bad,
          quiet: true,
        },
      ),
      /strategies\.0: sampler: strategy 'cfg\+\+' is defined for ddim \(eta 0\), euler, euler_ancestral, dpmpp_2m only, not ddpm/,
    );
    assert.ok(!existsSync(bad), "nothing written before the error");
  });

  it("gives the same pixels whatever the batch size (paired noise per sample)", {
    timeout: 300_000,
  }, async () => {
    const out = join(dir, "batch1");
    await runSweep(writeConfig("b1.yaml", CONFIG.replace("batchSize: 3", "batchSize: 1")), {
      out,
      quiet: true,
    });
    const a = readdirSync(join(full, "cells")).map((id) => readFileSync(join(full, "cells", id, "grid.png")));
    const b = readdirSync(join(out, "cells")).map((id) => readFileSync(join(out, "cells", id, "grid.png")));
    assert.ok(
      a.length === 4 && a.every((g, i) => g.equals(b[i]!)),
      "grids identical with batch size 1 and 3",
    );
  });

  it("a run killed with SIGKILL and resumed gives the uninterrupted results", {
    timeout: 300_000,
  }, async () => {
    const out = join(dir, "killed");
    const child = join(dir, "child.mts");
    const runner = resolve(import.meta.dirname, "..", "src", "sweep", "runner.ts");
    writeFileSync(
      child,
      `import { runSweep } from ${JSON.stringify(runner)};
await runSweep(${JSON.stringify(config())}, { out: ${JSON.stringify(out)}, backend: "wasm", quiet: true,
  afterCell: () => new Promise((r) => setTimeout(r, 60_000)) });
`,
    );
    const proc = spawn(process.execPath, ["--import", "tsx", child], {
      cwd: resolve(import.meta.dirname, ".."),
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    proc.stderr.on("data", (d) => {
      stderr += String(d);
    });
    const exited = new Promise<void>((r) => proc.on("exit", () => r()));
    const records = () =>
      existsSync(join(out, "cells"))
        ? readdirSync(join(out, "cells")).filter((id) => existsSync(join(out, "cells", id, "record.json")))
        : [];
    const t0 = Date.now();
    while (records().length === 0) {
      assert.ok(proc.exitCode === null, `child ended before its first cell: ${stderr}`);
      assert.ok(Date.now() - t0 < 240_000, "child wrote a record in time");
      await new Promise((r) => setTimeout(r, 100));
    }
    proc.kill("SIGKILL");
    await exited;
    assert.equal(records().length, 1, "killed after exactly one cell");
    await assert.rejects(
      runSweep(config(), { out, resume: true, quiet: true }),
      /lock left by pid \d+ .*no longer running.*--force/,
      "the dead process's lock is reported",
    );
    const r = await runSweep(config(), { out, resume: true, quiet: true, force: true });
    assert.equal(r.skipped.length, 1, "the finished cell is skipped");
    assert.equal(r.finished.length, 3, "the rest is sampled");
    assert.equal(csvWithoutTiming(out), csvWithoutTiming(full), "same results.csv as the uninterrupted run");
  });

  it("3 shards merged give the unsharded results.csv", { timeout: 300_000 }, async () => {
    const shards = [1, 2, 3].map((i) => join(dir, `shard${i}`));
    for (const [i, s] of shards.entries())
      await runSweep(config(), { out: s, shard: `${i + 1}/3`, quiet: true });
    const merged = join(dir, "merged");
    const m = mergeRuns(merged, shards);
    assert.equal(m.cells, 4, "every cell merged");
    assert.equal(csvWithoutTiming(merged), csvWithoutTiming(full), "same results.csv as the unsharded run");
    const other = join(dir, "other");
    await runSweep(writeConfig("other.yaml", CONFIG.replace("seed: 7", "seed: 8")), {
      out: other,
      shard: "1/3",
      quiet: true,
    });
    assert.throws(
      () => mergeRuns(join(dir, "merged2"), [shards[0]!, other]),
      /differs.*different sweeps/,
      "configs must match",
    );
  });
});
