// Opens a built report in headless Chromium from file://, as a reader would: no console errors, every chart has
// drawn traces, every image decoded. Skips (with the reason) where Chromium or playwright-core is not installed;
// CI installs both (see src/report/README.md).
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { buildReport } from "../src/report/index.ts";
import { writeSyntheticRun } from "../src/report/synthetic.ts";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

async function loadPlaywright(): Promise<typeof import("playwright-core") | string> {
  if (!existsSync(CHROMIUM))
    return `${CHROMIUM} not found (apt-get install -y chromium, or set CHROMIUM_PATH)`;
  try {
    return await import("playwright-core");
  } catch {
    return "playwright-core is not installed (npm install -D playwright-core)";
  }
}

describe("report in a browser", () => {
  it("loads from file:// without errors, draws every chart and loads every image", {
    timeout: 180_000,
  }, async (t) => {
    const pw = await loadPlaywright();
    if (typeof pw === "string") {
      t.skip(`browser test skipped: ${pw}`);
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), "gl-report-browser-"));
    const profile = mkdtempSync(join(tmpdir(), "gl-chromium-profile-"));
    const keep = process.env.GUIDANCE_LAB_KEEP_REPORT === "1";
    const records = writeSyntheticRun(dir);
    const { htmlPath } = buildReport(dir);
    // A persistent context is how Playwright takes a fresh --user-data-dir of our choosing.
    const context = await pw.chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ARGS,
      viewport: { width: 1400, height: 900 },
    });
    try {
      const page = context.pages()[0] ?? (await context.newPage());
      const errors: string[] = [];
      page.on("console", (m) => {
        if (m.type() === "error") errors.push(`console: ${m.text()}`);
      });
      page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
      page.on("requestfailed", (r) => errors.push(`request failed: ${r.url()} (${r.failure()?.errorText})`));
      await page.goto(pathToFileURL(htmlPath).href, { waitUntil: "load", timeout: 120_000 });
      // Strings, not functions: the test's tsconfig has no DOM types.
      const ready = await page.evaluate("window.reportReady");
      assert.equal(ready, true, "every Plotly.newPlot resolved");
      await page.waitForFunction("[...document.images].every((i) => i.complete)", undefined, {
        timeout: 30_000,
      });

      const containers = await page.locator(".plot").count();
      const plots = page.locator(".js-plotly-plot");
      const n = await plots.count();
      assert.ok(n > 3, `more than the 3 trade-off charts drawn (got ${n})`);
      assert.equal(n, containers, "every chart container became a Plotly chart");
      for (let i = 0; i < n; i++) {
        const plot = plots.nth(i);
        const id = await plot.getAttribute("id");
        const traces = await plot.locator(".scatterlayer .trace").count();
        assert.ok(traces > 0, `chart ${id} has drawn traces (got ${traces})`);
        const points = await plot.locator(".scatterlayer .trace .points path").count();
        assert.ok(points > 0, `chart ${id} has drawn markers`);
      }
      for (const id of ["tradeoff-pr", "tradeoff-is-fd", "tradeoff-clip-fd"]) {
        assert.equal(
          await page.locator(`#${id} .scatterlayer .trace`).count(),
          5,
          `${id}: one trace per curve`,
        );
        const bars = await page.locator(`#${id} .errorbars .errorbar path`).count();
        assert.ok(bars > 0, `${id}: 95% error bars drawn (got ${bars})`);
      }
      for (const id of await page.locator(".plot[id^=scale-]").evaluateAll((els) => els.map((e) => e.id))) {
        const bars = await page.locator(`#${id} .errorbars .errorbar path`).count();
        assert.ok(bars > 0, `${id}: error bars on the metric-vs-scale chart`);
      }
      const frontiers = page.locator(".plot[id^=frontier-]");
      assert.ok((await frontiers.count()) > 0, "matched-diversity frontier charts drawn");
      for (let i = 0; i < (await frontiers.count()); i++) {
        const fills = await frontiers.nth(i).locator(".scatterlayer .js-fill").count();
        assert.ok(fills > 0, `frontier chart ${i}: shaded 95% bands drawn (got ${fills})`);
      }
      assert.ok((await page.locator("ul.headline li").count()) > 0, "frontier headline sentences shown");
      assert.ok(
        (await page.locator("table.compare tbody tr").count()) > 0,
        "the paired comparison table rendered",
      );
      // Guide strength (the synthetic run records its CLIP guide's own score per sample).
      assert.ok(
        (await page.locator("#guide-strength .js-plotly-plot").count()) >= 2,
        "guide-score gain vs oracle gain and the adversarial gap drawn",
      );
      for (const id of ["guide-gain-clip", "guide-gap"]) {
        const bars = await page.locator(`#${id} .errorbars .errorbar path`).count();
        assert.ok(bars > 0, `${id}: 95% error bars drawn (got ${bars})`);
      }
      assert.ok(
        (await page.locator("#guide-strength table.guides tbody tr").count()) > 0,
        "the guide-gain table rendered",
      );
      const sure = (await page.locator("#how-sure").textContent()) ?? "";
      assert.match(sure, /Noise floor/, "the how-sure panel states the noise floor");
      // Titles stay clear of Plotly's toolbar: the toolbar is vertical at the right, titles start at the left.
      const overlap = (await page.evaluate(`(() => {
        const bad = [];
        for (const plot of document.querySelectorAll('.js-plotly-plot')) {
          plot.dispatchEvent(new MouseEvent('mouseover', { bubbles: true }));
          const t = plot.querySelector('.gtitle');
          const m = plot.querySelector('.modebar');
          if (!t || !m) continue;
          const a = t.getBoundingClientRect();
          const b = m.getBoundingClientRect();
          if (b.width > 0 && a.right > b.left && a.left < b.right && a.bottom > b.top && a.top < b.bottom) bad.push(plot.id);
        }
        return bad;
      })()`)) as string[];
      assert.deepEqual(overlap, [], "no chart title under the toolbar");

      const images = (await page.evaluate(
        "[...document.images].map((i) => ({ src: i.getAttribute('src'), w: i.naturalWidth }))",
      )) as { src: string; w: number }[];
      assert.equal(
        images.length,
        records.length + 1,
        "every cell's grid and the reference grid are on the page",
      );
      for (const img of images) assert.ok(img.w > 0, `image ${img.src} loaded (naturalWidth ${img.w})`);

      assert.deepEqual(errors, [], "no console errors, page errors or failed requests");
      const shot = join(dir, "screenshot.png");
      await page.screenshot({ path: shot, fullPage: true });
      assert.ok(statSync(shot).size > 10_000, "screenshot written to the run folder");
      t.diagnostic(
        `report ${htmlPath}; screenshot ${shot}${keep ? "" : " (removed; GUIDANCE_LAB_KEEP_REPORT=1 keeps it)"}`,
      );
    } finally {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
      if (!keep) rmSync(dir, { recursive: true, force: true });
    }
  });
});
