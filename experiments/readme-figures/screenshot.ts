// The README's screenshot of a report page: headless Chromium (Debian's `chromium`, or CHROMIUM_PATH) via
// playwright-core, full page at a laptop width.
// Run: node --import tsx experiments/readme-figures/screenshot.ts RUN_DIR/index.html [OUT.png] [SELECTOR]
// (default docs/report.png, the top of the page; with a CSS selector, that element alone, e.g. "#guide-strength").
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { chromium } from "playwright-core";

const [html, out = "docs/report.png", selector] = process.argv.slice(2);
if (!html) throw new Error("usage: screenshot.ts RUN_DIR/index.html [OUT.png] [SELECTOR]");
// A persistent context with a fresh profile, as the browser test does: Debian's chromium wants its own user-data-dir.
const browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "gl-shot-")), {
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  viewport: { width: 1280, height: 900 },
});
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  await page.goto(pathToFileURL(resolve(html)).href);
  await page.waitForTimeout(1500);
  if (selector) {
    const el = page.locator(selector);
    if ((await el.count()) === 0)
      throw new Error(`screenshot.ts: no element matches '${selector}' in ${html}`);
    await el.first().screenshot({ path: out });
  } else await page.screenshot({ path: out, fullPage: false });
  process.stderr.write(`screenshot → ${out}\n`);
} finally {
  await browser.close();
}
