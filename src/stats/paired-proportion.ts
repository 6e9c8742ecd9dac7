// Intervals for the difference of two proportions measured on the same samples (two guidance settings scored by
// the oracle on the same x_T and step noise): the paired 2×2 table of verdicts.
import { wilsonInterval } from "../metrics/prompt-accuracy.ts";
import type { Interval } from "./bootstrap.ts";

/** The paired 2×2 table: both right, right only under A, right only under B, both wrong. */
export interface PairedTable {
  both: number;
  onlyA: number;
  onlyB: number;
  neither: number;
}

/** Tallies two equal-length verdict vectors (sample i of A pairs with sample i of B). */
export function pairedTable(a: readonly boolean[], b: readonly boolean[]): PairedTable {
  if (a.length !== b.length)
    throw new Error(`paired table: ${a.length} verdicts against ${b.length}; pairs need equal lengths`);
  const t: PairedTable = { both: 0, onlyA: 0, onlyB: 0, neither: 0 };
  a.forEach((x, i) => {
    const y = b[i]!;
    if (x && y) t.both++;
    else if (x) t.onlyA++;
    else if (y) t.onlyB++;
    else t.neither++;
  });
  return t;
}

/** z_{0.975} to the precision published reference values use (R's qnorm(0.975)). */
const Z95 = 1.959963984540054;

/**
 * Newcombe's hybrid score ("square-and-add") interval for the difference of paired proportions p_A − p_B
 * (Newcombe 1998, Statist. Med. 17:2635–2650, method 10; as given in Fagerland, Lydersen & Laake 2017,
 * *Statistical Analysis of Contingency Tables*, §8.5): Wilson intervals [l₁, u₁] for p_A and [l₂, u₂] for p_B
 * combined with the correlation of the paired estimates,
 *   L = Δ − √((p_A − l₁)² + (u₂ − p_B)² − 2φ(p_A − l₁)(u₂ − p_B)),
 *   U = Δ + √((p_B − l₂)² + (u₁ − p_A)² − 2φ(p_B − l₂)(u₁ − p_A)),
 * with φ Newcombe's continuity-corrected correlation of the table: (ad − bc − n/2)/√(row and column products)
 * when ad − bc > n/2, 0 when 0 ≤ ad − bc ≤ n/2, (ad − bc)/√(…) when negative, and 0 when a margin is empty.
 * Unlike the percentile interval of bootstrapped differences, it is not degenerate when no pair is discordant:
 * two cells right on the same 840 samples differ by 0 with an interval of about ±0.5 points, not [0, 0].
 * Like the exact McNemar test it pairs with, it treats samples as independent pairs.
 */
export function newcombePairedInterval(t: PairedTable, z = Z95): Interval {
  const { both: a, onlyA: b, onlyB: c, neither: d } = t;
  for (const [k, v] of Object.entries(t))
    if (!Number.isInteger(v) || v < 0)
      throw new Error(`newcombe interval: ${k} must be a count ≥ 0, got ${v}`);
  const n = a + b + c + d;
  if (n === 0) throw new Error("newcombe interval: an empty table has no difference");
  const pA = (a + b) / n;
  const pB = (a + c) / n;
  const [l1, u1] = wilsonInterval(a + b, n, z);
  const [l2, u2] = wilsonInterval(a + c, n, z);
  const margins = (a + b) * (c + d) * (a + c) * (b + d);
  let phi = 0;
  if (margins > 0) {
    const cross = a * d - b * c;
    if (cross > n / 2) phi = (cross - n / 2) / Math.sqrt(margins);
    else if (cross < 0) phi = cross / Math.sqrt(margins);
  }
  const delta = pA - pB;
  const half = (x: number, y: number) => Math.sqrt(Math.max(0, x * x + y * y - 2 * phi * x * y));
  return {
    lo: Math.max(-1, delta - half(pA - l1, u2 - pB)),
    hi: Math.min(1, delta + half(pB - l2, u1 - pA)),
  };
}
