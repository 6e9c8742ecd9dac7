// Which cells are the conditional model: compare's default pairs and the guide gains both pair against them.
import { parseStrategyConfig, strategyDef } from "../strategies/registry.ts";
import type { CellRecord } from "./run-folder.ts";

/**
 * Whether guidance is off in a cell, as its strategy's registry entry defines it (`neutral`: the config at which it
 * reproduces the conditional model or its base strategy alone; cfg++'s neutral point is the unconditional model,
 * which is not the comparison wanted here). Kinds the registry does not know fall back to cfg-like s = 1 and
 * added guides s = 0.
 */
export function isNeutral(r: CellRecord): boolean {
  if (r.strategy === "none") return true;
  try {
    const config = parseStrategyConfig({ ...r.strategyParams, kind: r.strategy, scale: r.scale }) as Record<
      string,
      unknown
    >;
    const n = strategyDef(r.strategy).neutral(config as { kind: string });
    if (n.equals === "unconditional") return false;
    const target = n.config as Record<string, unknown>;
    return Object.keys(target).every((k) => JSON.stringify(target[k]) === JSON.stringify(config[k]));
  } catch {
    return r.strategy.startsWith("cfg") || r.strategy === "apg" ? r.scale === 1 : r.scale === 0;
  }
}
