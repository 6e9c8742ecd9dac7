// The report page's explorer panel: the guidance explorer (src/explore) written beside the page, in explorer/,
// and opened in a frame on request (loading its runtime and models costs seconds of CPU, which a reader who only
// reads the charts should not pay).
import { join } from "node:path";
import { ensureExplorerSync } from "../explore/build.ts";

export interface ExplorerPanel {
  /** Bytes written into explorer/, when it was. */
  bytes?: number;
  /** Why there is no explorer (no zoo denoiser, or its build failed). */
  why?: string;
}

/** Writes explorer/ into the run folder; never throws (a report must not fail because of its panel). */
export function writeExplorerPanel(runDir: string): ExplorerPanel {
  if (process.env.GUIDANCE_LAB_REPORT_EXPLORER === "0")
    return { why: "left out by GUIDANCE_LAB_REPORT_EXPLORER=0 when the report was written" };
  try {
    const r = ensureExplorerSync(join(runDir, "explorer"));
    return r.files ? { bytes: r.files.total } : { why: r.why ?? "unknown" };
  } catch (e) {
    return { why: `its build failed: ${(e as Error).message.split("\n")[0]}` };
  }
}

/**
 * The explorer's starting settings from a run's config.json (its first prompt, steps and sampler), as a query
 * string; anything missing or unexpected is left to the explorer's defaults.
 */
export function explorerQuery(config: unknown): string {
  const c = (typeof config === "object" && config !== null ? config : {}) as Record<string, unknown>;
  const q = new URLSearchParams();
  const first = Array.isArray(c.prompts) ? c.prompts[0] : undefined;
  const text = typeof first === "string" ? first : (first as { text?: unknown } | undefined)?.text;
  if (typeof text === "string" && text !== "") q.set("prompt", text);
  const steps = Array.isArray(c.steps) ? c.steps[0] : c.steps;
  if (Number.isInteger(steps) && (steps as number) > 0) q.set("steps", String(steps));
  const sampler = Array.isArray(c.sampler) ? c.sampler[0] : c.sampler;
  if (typeof sampler === "string") q.set("sampler", sampler);
  return q.toString();
}

export function explorerPanelHtml(p: ExplorerPanel, esc: (s: string) => string, query = ""): string {
  const src = `explorer/index.html${query ? `?${query}` : ""}`;
  const body =
    p.bytes === undefined
      ? `<p class="lead">Not available for this report: ${esc(p.why ?? "")}.</p>`
      : `<p class="lead">Samples the zoo denoiser in this browser with the project's own strategies, samplers and seeded noise (the denoiser on onnxruntime-web, wasm): pick a prompt or a suite, a strategy, drag the scale; the grid and the first sample's predicted x0 step by step follow. The same seed gives the image <code>guidance-lab sample --runtime onnx</code> gives. Offline, from <code>explorer/</code> beside this page (${(p.bytes / 1e6).toFixed(1)} MB). From file:// its forwards run on one thread; <code>guidance-lab serve &lt;this run folder&gt;</code> serves it cross-origin isolated, on every core.</p>
<p class="lead">It starts from this run's first prompt, steps and sampler. Its seed S is <code>guidance-lab sample --seed S</code>'s, not a sweep cell's seeds.</p>
<p><button type="button" id="explorer-open" data-src="${esc(src)}">open the explorer here</button> or <a href="${esc(src)}">in its own page</a></p>
<iframe id="explorer-frame" title="guidance explorer" style="display:none;width:100%;height:900px;border:1px solid var(--line)"></iframe>
<script>document.getElementById("explorer-open").addEventListener("click",function(){var f=document.getElementById("explorer-frame");f.src=this.dataset.src;f.style.display="block";this.disabled=true;});</script>`;
  return `<section id="explorer"><h2>Explore guidance live</h2>\n${body}</section>`;
}
