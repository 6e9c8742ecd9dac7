import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { backendFromEnv, initEngine } from "../src/core/engine.ts";
import { compare, SectionContext, TOL_TRAJECTORY } from "../src/verify/common.ts";
import { formatRows, verifyReference } from "../src/verify/index.ts";

const GOLDEN =
  process.env.GUIDANCE_LAB_GOLDEN ?? resolve(dirname(fileURLToPath(import.meta.url)), "../../shared/golden");
const noGolden = existsSync(join(GOLDEN, "manifest.json"))
  ? false
  : `golden reference not found at ${GOLDEN} (set GUIDANCE_LAB_GOLDEN)`;

const tmp = mkdtempSync(join(tmpdir(), "verify-test-"));
before(async () => {
  await initEngine(backendFromEnv(), { quiet: true });
});
after(() => rmSync(tmp, { recursive: true, force: true }));

describe("verifyReference", () => {
  // The model-driven sections (forwards, whole guided trajectories) run in test/verify-models.test.ts.
  test("the arithmetic sections pass on the golden reference", { skip: noGolden }, async () => {
    const sections = ["schedules", "unit"];
    const { rows, passed, failed } = await verifyReference(GOLDEN, sections);
    const bad = rows.filter((r) => !r.pass);
    assert.equal(failed, 0, formatRows(bad));
    assert.equal(passed, rows.length);
    for (const s of sections)
      assert.ok(
        rows.some((r) => r.section === s),
        `no rows for ${s}`,
      );
  });

  test("a truncated array gives a failing row naming the file", { skip: noGolden }, async () => {
    const dir = join(tmp, "corrupt");
    cpSync(join(GOLDEN, "manifest.json"), join(dir, "manifest.json"));
    cpSync(join(GOLDEN, "unit"), join(dir, "unit"), { recursive: true });
    cpSync(join(GOLDEN, "schedules"), join(dir, "schedules"), { recursive: true });
    const victim = join(dir, "unit", "timestep_embedding_dim64.npy");
    const bytes = readFileSync(victim);
    writeFileSync(victim, bytes.subarray(0, bytes.length - 100));
    writeFileSync(join(dir, "schedules", "betas_linear_1000.npy"), "not a numpy file");
    const { rows, failed } = await verifyReference(dir, ["unit", "schedules", "glide_cfg", "nonsense"]);
    assert.ok(failed >= 4, formatRows(rows));
    const unitRow = rows.find((r) => r.section === "unit" && !r.pass);
    assert.match(unitRow?.note ?? "", /unit\/timestep_embedding_dim64\.npy: truncated data/);
    assert.ok(
      rows.some((r) => r.section === "unit" && r.pass),
      "the other dims still pass",
    );
    const sched = rows.find((r) => r.section === "schedules" && !r.pass);
    assert.match(sched?.note ?? "", /schedules\/betas_linear_1000\.npy: bad magic/);
    assert.match(rows.find((r) => r.section === "glide_cfg")?.note ?? "", /glide_cfg\/: directory not found/);
    assert.match(rows.find((r) => r.section === "nonsense")?.note ?? "", /unknown section/);
    for (const r of rows) assert.ok(!(r.note ?? "").includes("\n"), "one-line notes");
  });

  test("a missing directory or manifest is a failing row, not a crash", async () => {
    const missing = await verifyReference(join(tmp, "does-not-exist"));
    assert.equal(missing.failed, 1);
    assert.match(missing.rows[0]!.note ?? "", /directory not found/);
    if (noGolden) return;
    const dir = join(tmp, "no-manifest");
    cpSync(join(GOLDEN, "glide_ddim"), join(dir, "glide_ddim"), { recursive: true });
    const r = await verifyReference(dir);
    assert.equal(r.passed, 0);
    assert.match(r.rows[0]!.note ?? "", /manifest\.json: file not found/);
  });

  test("a loop's trajectory tolerance comes from the manifest when it has one, and says so", () => {
    const meta = { tolerances: { trajectory_final_samples: { clip_guided: 1e-3 } } };
    const withTol = new SectionContext(tmp, "clip_guided", { meta }).trajectoryTol();
    assert.deepEqual(withTol, {
      tol: 1e-3,
      from: "manifest meta.tolerances.trajectory_final_samples.clip_guided",
    });
    const without = new SectionContext(tmp, "gd_guided", { meta }).trajectoryTol();
    assert.equal(without.tol, TOL_TRAJECTORY, "the default for a loop the manifest does not list");
    assert.match(without.from, /default/);
    const row = new SectionContext(tmp, "clip_guided", { meta }).trajectoryRow((tol) =>
      compare("clip_guided", "trajectory", [1, 2], [1, 2.0015], tol),
    );
    assert.ok(row.pass && row.tol === 1e-3, "7.5e-4 passes at the manifest's 1e-3");
    assert.match(
      formatRows([row]),
      /1\.00e-3\s+manifest meta\.tolerances\.trajectory_final_samples\.clip_guided\s+PASS/,
    );
  });

  test("formatRows ends with the totals line", () => {
    const text = formatRows([
      { section: "a", case: "x", maxAbs: 0, rel: 0, tol: 1e-5, pass: true },
      { section: "a", case: "y", maxAbs: 1, rel: 0.5, tol: 1e-5, pass: false, note: "why" },
    ]);
    const lines = text.trimEnd().split("\n");
    assert.equal(lines.at(-1), "1 passed, 1 failed");
    assert.match(lines[2]!, /FAIL\s+why$/);
  });
});
