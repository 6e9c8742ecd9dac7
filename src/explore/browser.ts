// Drives the explorer in headless Chromium (playwright-core, a development dependency): the browser test and the
// `npm run bench` row open the page from file:// and call window.explorer.run, exactly as a reader's slider does.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
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

/**
 * CPU seconds (user + system) used so far by the Chromium renderer processes this process started, read from
 * Linux's /proc (undefined elsewhere). A page's wasm runs in its renderer, its worker threads included, so the
 * difference around a call is the CPU that call cost: on a loaded machine less inflated than its wall time, but
 * not free of the others' cache contention.
 */
export function rendererCpuSeconds(root = process.pid): number | undefined {
  if (!existsSync("/proc/self/stat")) return undefined;
  const procs: { pid: number; ppid: number; ticks: number }[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      // Fields after the command name (which may hold spaces): state ppid … utime(14th) stime(15th).
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      procs.push({ pid: Number(name), ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) });
    } catch {
      // the process ended while we looked
    }
  }
  const children = new Map<number, number[]>();
  for (const p of procs) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p.pid]);
  const ticks = new Map(procs.map((p) => [p.pid, p.ticks]));
  let total = 0;
  const stack = [...(children.get(root) ?? [])];
  while (stack.length) {
    const pid = stack.pop()!;
    stack.push(...(children.get(pid) ?? []));
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("--type=renderer"))
        total += ticks.get(pid) ?? 0;
    } catch {
      // ended
    }
  }
  // USER_HZ, 100 on every Linux build that matters here (getconf CLK_TCK).
  return total / 100;
}

export interface ExplorerPage {
  page: import("playwright-core").Page;
  /** Console errors, page errors and failed requests since the page opened. */
  errors: string[];
  /** The runtime line window.explorer.ready resolved to. */
  runtime: string;
  /** onnxruntime-web's threads in the page (1 from file://). */
  threads: number;
  /** An ONNX graph loaded (and run once) on the page's runtime setup: time(reps) gives each run's milliseconds. */
  graph(
    bytes: Uint8Array,
    inputs: { name: string; dims: number[] }[],
  ): Promise<{ time(reps: number): Promise<number[]>; release(): Promise<void> }>;
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
      graph: async (bytes, inputs) => {
        const id = (await page.evaluate(
          `window.explorer.loadGraph(${JSON.stringify(Buffer.from(bytes).toString("base64"))}, ${JSON.stringify(inputs)})`,
        )) as number;
        return {
          time: async (reps) =>
            (await page.evaluate(`window.explorer.timeGraph(${id}, ${reps})`)) as number[],
          release: async () => void (await page.evaluate(`window.explorer.dropGraph(${id})`)),
        };
      },
      run: async (s) => (await page.evaluate(`window.explorer.run(${JSON.stringify(s)})`)) as RunResult,
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}
