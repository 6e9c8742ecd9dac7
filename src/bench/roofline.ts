// ONNX Runtime's convolution roofline on this CPU: one big 3×3 convolution per graph (batch 32 at the zoo's image
// size, equal in and out channels), the best GFLOP/s over a few widths. A denoiser's forward is mostly such
// convolutions, so its GFLOP/s against this figure says how much of the CPU's measured conv throughput the exported
// graph reaches (the rest: normalisation, attention, elementwise ops and the bridge's copies).
import { Graph } from "../onnx/graph.ts";
import { OnnxSessions } from "../onnx/runtime.ts";
import type { Row } from "./engine.ts";
import { type RuntimeSpec, timeSync } from "./runtimes.ts";

export interface RooflineResult {
  rows: Row[];
  /** The best GFLOP/s per spec label. */
  best: Map<string, number>;
}

/** One 3×3 Conv (pads 1), `c` → `c` channels on NCHW `b`×`c`×`size`²: the roofline's graph. */
export function convGraph(b: number, c: number, size: number): Uint8Array {
  const g = new Graph();
  const x = g.input("x", "float", [b, c, size, size]);
  const w = Float32Array.from({ length: c * c * 9 }, (_, i) => Math.sin(i) * 0.05);
  const y = g.node("Conv", [x, g.floats("w", w, [c, c, 3, 3])], {
    kernel_shape: [3, 3],
    strides: [1, 1],
    pads: [1, 1, 1, 1],
  });
  g.identity(y, "y");
  g.output("y", "float", [b, c, size, size]);
  return g.serialize();
}

/**
 * conv3x3 at batch `b` and `size`² for each ONNX Runtime spec and channel width; the best per spec. The rate is the
 * median run's, or with `peak` the fastest run's (a peak: a shared machine's slow runs do not lower it).
 */
export function convRoofline(
  specs: readonly RuntimeSpec[],
  opts: { batch: number; size: number; widths: number[]; minMs: number; peak?: boolean },
): RooflineResult {
  const rows: Row[] = [];
  const best = new Map<string, number>();
  const { batch: b, size } = opts;
  for (const spec of specs) {
    if (spec.runtime !== "onnx") continue;
    const host = new OnnxSessions(spec.threads !== undefined ? { threads: spec.threads } : {});
    try {
      for (const c of opts.widths) {
        const n = b * c * size * size;
        const s = host.session(`conv${c}`, () => convGraph(b, c, size), n);
        const x = Float32Array.from({ length: n }, (_, i) => Math.cos(i));
        const feeds = { x: { type: "float32" as const, data: x, dims: [b, c, size, size] } };
        const timing = timeSync(() => void host.run(s, feeds, n), opts.minMs);
        const flops = 2 * b * c * c * 9 * size * size;
        const ms = opts.peak ? timing.minMs : timing.medianMs;
        const gflops = flops / ms / 1e6;
        best.set(spec.label, Math.max(best.get(spec.label) ?? 0, gflops));
        rows.push({
          name: "conv3x3 roofline",
          backend: spec.label,
          value: gflops,
          unit: "GFLOP/s",
          ms,
          detail: `one Conv, batch ${b}, ${c}→${c} channels, ${size}x${size}, pads 1; ${(flops / 1e9).toFixed(2)} GFLOP, ${opts.peak ? `fastest of ${timing.reps} (median ${timing.medianMs.toFixed(1)} ms)` : `min ${timing.minMs.toFixed(1)} ms of ${timing.reps}`}`,
        });
      }
    } finally {
      host.dispose();
    }
  }
  return { rows, best };
}
