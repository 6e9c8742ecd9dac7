// Drives the explorer in headless Chromium (playwright-core, a development dependency): the browser test and the
// `npm run bench` row open the page from file:// and call window.explorer.run, exactly as a reader's slider does.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type { RunResult, RunSettings } from "./app.ts";
import { serveFolder } from "./serve.ts";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
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

/** playwright-core, or why the browser cannot be driven here. */
export async function loadPlaywright(): Promise<typeof import("playwright-core") | string> {
  if (!existsSync(CHROMIUM))
    return `${CHROMIUM} not found (apt-get install -y chromium, or set CHROMIUM_PATH)`;
  try {
    return await import("playwright-core");
  } catch {
    return "playwright-core is not installed (npm install -D playwright-core)";
  }
}

export interface ExplorerPage {
  page: import("playwright-core").Page;
  /** Console errors, page errors and failed requests since the page opened. */
  errors: string[];
  /** The runtime line window.explorer.ready resolved to. */
  runtime: string;
  /** onnxruntime-web's threads in the page (1 from file://). */
  threads: number;
  /** window.explorer.timeGraph: ms of each run of an ONNX graph on the page's runtime setup. */
  timeGraph(bytes: Uint8Array, inputs: { name: string; dims: number[] }[], reps: number): Promise<number[]>;
  run(s: Partial<RunSettings>): Promise<RunResult>;
  close(): Promise<void>;
}

/**
 * Opens `dir`/index.html with `query` (e.g. "steps=2&n=2") and waits until the explorer is ready: from file://, or
 * with `served`, through `serveFolder` on localhost (cross-origin isolated, so onnxruntime-web has threads).
 */
export async function openExplorer(
  pw: typeof import("playwright-core"),
  dir: string,
  query = "",
  opts: { served?: boolean } = {},
): Promise<ExplorerPage> {
  const server = opts.served ? await serveFolder(dir) : undefined;
  const base = server ? `${server.url}index.html` : pathToFileURL(join(dir, "index.html")).href;
  const profile = mkdtempSync(join(tmpdir(), "gl-chromium-profile-"));
  const context = await pw.chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 900 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => errors.push(`request failed: ${r.url()} (${r.failure()?.errorText})`));
  const close = async () => {
    await context.close();
    await server?.close();
    rmSync(profile, { recursive: true, force: true });
  };
  try {
    await page.goto(`${base}${query ? `?${query}` : ""}`, {
      waitUntil: "load",
      timeout: 120_000,
    });
    // Strings, not functions: the tests' tsconfig view has no DOM types.
    await page.waitForFunction(
      "window.explorer !== undefined || document.getElementById('status').className === 'error'",
      undefined,
      {
        timeout: 120_000,
      },
    );
    const failed = (await page.evaluate("window.explorer === undefined")) as boolean;
    if (failed)
      throw new Error(`explorer did not start: ${await page.textContent("#status")}; ${errors.join("; ")}`);
    const runtime = (await page.evaluate("window.explorer.ready")) as string;
    return {
      page,
      errors,
      runtime,
      threads: (await page.evaluate("window.explorer.threads")) as number,
      timeGraph: async (bytes, inputs, reps) =>
        (await page.evaluate(
          `window.explorer.timeGraph(${JSON.stringify(Buffer.from(bytes).toString("base64"))}, ${JSON.stringify(inputs)}, ${reps})`,
        )) as number[],
      run: async (s) => (await page.evaluate(`window.explorer.run(${JSON.stringify(s)})`)) as RunResult,
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}
