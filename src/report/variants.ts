// Strategy variants: a strategy plus the parameters (other than the scale) that vary among its cells. The page's
// curves and legends and compare's frontier curves use the same names.
import { flattenParams } from "./csv.ts";
import type { CellRecord } from "./run-folder.ts";

/**
 * Strategy label with the parameters (other than the scale) that vary among that strategy's cells, so two
 * cfg-rescale runs with different φ get two curves, while constant parameters do not clutter the legend.
 */
export function variantLabels(records: readonly CellRecord[]): Map<CellRecord, string> {
  const byStrategy = new Map<string, CellRecord[]>();
  for (const r of records) byStrategy.set(r.strategy, [...(byStrategy.get(r.strategy) ?? []), r]);
  const out = new Map<CellRecord, string>();
  for (const [strategy, rs] of byStrategy) {
    const flats = rs.map((r) => flattenParams(r.strategyParams));
    const keys = [...new Set(flats.flatMap((f) => Object.keys(f)))].sort();
    const varying = keys.filter((k) => new Set(flats.map((f) => JSON.stringify(f[k]))).size > 1);
    rs.forEach((r, i) => {
      const f = flats[i]!;
      const parts = varying.map((k) => `${k}=${typeof f[k] === "string" ? f[k] : JSON.stringify(f[k])}`);
      out.set(r, parts.length ? `${strategy} (${parts.join(", ")})` : strategy);
    });
  }
  return out;
}
