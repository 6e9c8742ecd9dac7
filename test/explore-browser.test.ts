// The guidance explorer in headless Chromium from file://, as a reader opens it: the page samples on load, the
// scale slider resamples and changes the grid, nothing logs an error, and one seed's images equal those of
// `guidance-lab sample --runtime onnx` (the CLI's own function) within one 8-bit level. Tiny settings (2 images,
// 3 steps) keep it fast. The same folder served by `guidance-lab serve` is cross-origin isolated, runs its forwards
// on every core and gives the same images. Skips, saying why, where Chromium, playwright-core, onnxruntime-node or the zoo's
// denoiser is missing.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { runSample } from "../src/cli/sample.ts";
import { initEngine } from "../src/core/engine.ts";
import { readPng } from "../src/data/png.ts";
import { type ExplorerPage, loadPlaywright, openExplorer } from "../src/explore/browser.ts";
import { explorerMissing, SIZE_BUDGET_BYTES, writeExplorer } from "../src/explore/build.ts";
import { onnxUnavailable } from "../src/onnx/runtime.ts";
import { explorerQuery } from "../src/report/explorer-panel.ts";
import { buildReport } from "../src/report/index.ts";
import { writeSyntheticRun } from "../src/report/synthetic.ts";

process.env.GUIDANCE_LAB_QUIET = "1";

describe("explorer in a browser", () => {
  let why: string | undefined;
  let pw: Awaited<ReturnType<typeof loadPlaywright>>;
  let dir: string;
  let explorer: ExplorerPage | undefined;
  /** The file:// page's images for seed 7 (the CLI comparison's), for the served page's threads to match. */
  let fileImages: number[][] | undefined;

  before(async () => {
    await initEngine("wasm", { quiet: true });
    pw = await loadPlaywright();
    if (typeof pw === "string") why = pw;
    else if (explorerMissing()) why = explorerMissing();
    else {
      const onnx = await onnxUnavailable();
      if (onnx) why = `onnxruntime-node does not load (${onnx}): no CLI reference`;
    }
    if (why) return;
    dir = mkdtempSync(join(tmpdir(), "gl-explorer-test-"));
    await writeExplorer(dir);
  });

  after(async () => {
    await explorer?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("samples on load, resamples when the scale slider moves, no console error", {
    timeout: 300_000,
  }, async (t) => {
    if (why || typeof pw === "string") {
      t.skip(`explorer browser test skipped: ${why}`);
      return;
    }
    explorer = await openExplorer(pw, dir, "steps=3&n=2&seed=1");
    const { page } = explorer;
    await page.waitForFunction("window.explorer.runs >= 1", undefined, { timeout: 240_000 });
    const status = await page.textContent("#status");
    assert.match(status ?? "", /onnxruntime-web/, `status names the runtime: ${status}`);
    const grid = () => page.evaluate("document.getElementById('grid').toDataURL()") as Promise<string>;
    const before = await grid();
    const slider = page.locator("#scale");
    assert.equal(await slider.inputValue(), "3", "cfg's example scale");
    await slider.fill("8");
    await page.waitForFunction("window.explorer.runs >= 2 && !window.explorer.busy", undefined, {
      timeout: 240_000,
    });
    assert.equal(
      JSON.parse(await page.inputValue("#config")).scale,
      8,
      "the slider set the strategy's scale",
    );
    assert.notEqual(await grid(), before, "the grid changed with the scale");
    const unavailable = await page.locator("#strategy option[disabled]").allTextContents();
    assert.ok(
      unavailable.some((s) => s.startsWith("classifier")),
      "gradient guides are listed as unavailable",
    );
    assert.match((await page.textContent("#gradient-note")) ?? "", /exports forwards only/);
    assert.deepEqual(explorer.errors, [], "no console errors, page errors or failed requests");
  });

  it("gives the CLI's pixels for the same seed (within one 8-bit level)", { timeout: 300_000 }, async (t) => {
    if (why || !explorer) {
      t.skip(`explorer browser test skipped: ${why ?? "the page did not open"}`);
      return;
    }
    const s = { prompt: "a red circle", suite: "", sampler: "ddpm" as const, steps: 3, n: 2, seed: 7 };
    const strategy = { kind: "cfg", scale: 3 };
    const r = await explorer.run({ ...s, strategy });
    fileImages = r.images;
    assert.equal(r.images.length, 2);
    assert.equal(r.x0Steps.length, 3, "one predicted x0 per step");
    const out = mkdtempSync(join(tmpdir(), "gl-explorer-cli-"));
    try {
      await runSample({ model: "denoiser", strategy: "cfg", scale: 3, eta: 0, out, runtime: "onnx", ...s });
      let max = 0;
      for (let i = 0; i < s.n; i++) {
        const png = readPng(join(out, `sample-${String(i).padStart(3, "0")}.png`));
        for (let j = 0; j < png.data.length; j++) {
          const b = Math.round(Math.min(1, Math.max(0, r.images[i]![j]!)) * 255);
          max = Math.max(max, Math.abs(b - Math.round(png.data[j]! * 255)));
        }
      }
      t.diagnostic(`largest difference from the CLI: ${max} of 255`);
      assert.ok(max <= 1, `browser and CLI agree within one 8-bit level (largest difference ${max})`);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
    assert.deepEqual(explorer.errors, [], "no console errors");
  });

  it("served by `guidance-lab serve`: cross-origin isolated, threads on every core, the file:// page's pixels", {
    timeout: 300_000,
  }, async (t) => {
    if (why || typeof pw === "string" || !fileImages) {
      t.skip(`explorer served test skipped: ${why ?? "the file:// run did not happen"}`);
      return;
    }
    const served = await openExplorer(pw, dir, "autorun=0", { served: true });
    try {
      assert.equal(
        await served.page.evaluate("crossOriginIsolated"),
        true,
        "COOP/COEP make the page isolated",
      );
      const cores = (await served.page.evaluate("navigator.hardwareConcurrency")) as number;
      assert.equal(served.threads, cores, "onnxruntime-web takes every core");
      assert.match(served.runtime, new RegExp(`wasm, ${cores} thread`));
      const s = { prompt: "a red circle", suite: "", sampler: "ddpm" as const, steps: 3, n: 2, seed: 7 };
      const r = await served.run({ ...s, strategy: { kind: "cfg", scale: 3 } });
      let max = 0;
      for (const [i, img] of r.images.entries())
        for (const [j, v] of img.entries()) max = Math.max(max, Math.abs(v - fileImages[i]![j]!));
      t.diagnostic(`largest difference, ${cores} threads against 1: ${max}`);
      assert.ok(
        max <= 1e-5,
        `threaded forwards give the single-threaded images within 1e-5 (largest ${max})`,
      );
      assert.deepEqual(served.errors, [], "no console errors, page errors or failed requests");
    } finally {
      await served.close();
    }
  });
});

describe("explorer panel in a report page", () => {
  it("starts the explorer from the run's first prompt, steps and sampler", () => {
    const q = new URLSearchParams(
      explorerQuery({
        prompts: [{ text: "a red circle", id: "x" }],
        steps: [25, 50],
        sampler: ["ddim"],
        seed: 3,
      }),
    );
    assert.deepEqual(Object.fromEntries(q), { prompt: "a red circle", steps: "25", sampler: "ddim" });
    assert.equal(explorerQuery({ prompts: "nonsense", steps: -1 }), "", "unexpected values are left out");
  });

  it("writes explorer/ beside every report page and links it from a panel", { timeout: 300_000 }, (t) => {
    const missing = explorerMissing();
    if (missing) {
      t.skip(`explorer panel test skipped: ${missing}`);
      return;
    }
    const run = mkdtempSync(join(tmpdir(), "gl-explorer-report-"));
    try {
      writeSyntheticRun(run);
      const { htmlPath } = buildReport(run);
      const html = readFileSync(htmlPath, "utf8");
      assert.match(html, /<section id="explorer">/);
      assert.match(html, /href="explorer\/index\.html[?"]/);
      for (const f of ["index.html", "explorer.js", "ort-wasm.js", "tfjs-wasm.js", "model-denoiser.js"])
        assert.ok(existsSync(join(run, "explorer", f)), `explorer/${f} beside the page`);
      const bytes = readdirSync(join(run, "explorer")).reduce(
        (a, f) => a + statSync(join(run, "explorer", f)).size,
        0,
      );
      assert.ok(
        bytes <= SIZE_BUDGET_BYTES,
        `explorer/ keeps its budget: ${bytes} ≤ ${SIZE_BUDGET_BYTES} bytes`,
      );
    } finally {
      rmSync(run, { recursive: true, force: true });
    }
  });
});
