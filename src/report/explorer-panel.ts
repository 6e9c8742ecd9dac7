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

export function explorerPanelHtml(p: ExplorerPanel, esc: (s: string) => string): string {
  const body =
    p.bytes === undefined
      ? `<p class="lead">Not available for this report: ${esc(p.why ?? "")}.</p>`
      : `<p class="lead">Samples the zoo denoiser in this browser with the project's own strategies, samplers and seeded noise (the denoiser on onnxruntime-web, wasm): pick a prompt or a suite, a strategy, drag the scale; the grid and the first sample's predicted x0 step by step follow. The same seed gives the image <code>guidance-lab sample --runtime onnx</code> gives. Offline, from <code>explorer/</code> beside this page (${(p.bytes / 1e6).toFixed(1)} MB).</p>
<p><button type="button" id="explorer-open">open the explorer here</button> or <a href="explorer/index.html">in its own page</a></p>
<iframe id="explorer-frame" title="guidance explorer" style="display:none;width:100%;height:900px;border:1px solid var(--line)"></iframe>
<script>document.getElementById("explorer-open").addEventListener("click",function(){var f=document.getElementById("explorer-frame");f.src="explorer/index.html";f.style.display="block";this.disabled=true;});</script>`;
  return `<section id="explorer"><h2>Explore guidance live</h2>\n${body}</section>`;
}
