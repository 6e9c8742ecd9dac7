// The one list of guidance strategies. Adding a strategy = one file plus one line here; nothing registers itself
// on import. Configs are validated strictly (unknown keys and out-of-range values are errors naming the key), and
// wrapping strategies (classifier, clip, dynamic-threshold) nest any other strategy's config under `base`.
import { z } from "zod";
import { samplerEta } from "../core/samplers.ts";
import { formatIssues, READABLE_PARSE } from "../util/zod-issues.ts";
import { apgStrategy } from "./apg.ts";
import { apgMixStrategy } from "./apg-mix.ts";
import { autoguidanceStrategy } from "./autoguidance.ts";
import { cfgStrategy } from "./cfg.ts";
import { cfgPlusPlusStrategy } from "./cfg-plus-plus.ts";
import { cfgRescaleStrategy } from "./cfg-rescale.ts";
import { cfgZeroStarStrategy } from "./cfg-zero-star.ts";
import { classifierStrategy } from "./classifier.ts";
import { cleanClipStrategy } from "./clean-clip.ts";
import { clipStrategy } from "./clip.ts";
import { composableStrategy } from "./composable.ts";
import { dynamicThresholdStrategy } from "./dynamic-threshold.ts";
import { fdgStrategy } from "./fdg.ts";
import { mamboGStrategy } from "./mambo-g.ts";
import { negativeStrategy } from "./negative.ts";
import { noneStrategy, unconditionalStrategy } from "./none.ts";
import { pagStrategy } from "./pag.ts";
import { segStrategy } from "./seg.ts";
import { requireModels, withGuide } from "./shared.ts";
import { slgStrategy } from "./slg.ts";
import type { BuildContext, GuidanceModels, Strategy, StrategyDef } from "./strategy.ts";
import { tcfgStrategy } from "./tcfg.ts";

export const STRATEGIES = [
  noneStrategy,
  unconditionalStrategy,
  classifierStrategy,
  cfgStrategy,
  clipStrategy,
  cleanClipStrategy,
  negativeStrategy,
  composableStrategy,
  cfgRescaleStrategy,
  dynamicThresholdStrategy,
  apgStrategy,
  cfgPlusPlusStrategy,
  autoguidanceStrategy,
  cfgZeroStarStrategy,
  tcfgStrategy,
  fdgStrategy,
  mamboGStrategy,
  apgMixStrategy,
  pagStrategy,
  segStrategy,
  slgStrategy,
] as const;

export type StrategyKind = (typeof STRATEGIES)[number]["kind"];

/** Any strategy's parsed config. */
export type StrategyConfig = { kind: StrategyKind } & Record<string, unknown>;

const byKind = new Map<string, StrategyDef>(STRATEGIES.map((d) => [d.kind, d as unknown as StrategyDef]));

export const STRATEGY_KINDS: readonly StrategyKind[] = STRATEGIES.map((d) => d.kind);

export function strategyDef(kind: string): StrategyDef {
  const def = byKind.get(kind);
  if (!def) {
    throw new Error(`strategy: unknown kind '${kind}' (known: ${STRATEGY_KINDS.join(", ")})`);
  }
  return def;
}

/** The registry entry of `kind`, or undefined for a kind this version does not know (an older run's cells). */
export const knownStrategyDef = (kind: string): StrategyDef | undefined => byKind.get(kind);

/** Validates any strategy config; used for nested `base` configs so that their issues carry their path. */
export const strategyConfigSchema: z.ZodType<{ kind: string }> = z.lazy(() =>
  z.discriminatedUnion(
    "kind",
    STRATEGIES.map((d) => (d as unknown as StrategyDef).schema(strategyConfigSchema)) as unknown as [
      z.ZodObject<{ kind: z.ZodLiteral<string> }>,
      ...z.ZodObject<{ kind: z.ZodLiteral<string> }>[],
    ],
  ),
);

/** Parses a raw config (from YAML/JSON/CLI); `source` prefixes the error lines (e.g. the file and key). */
export function parseStrategyConfig(raw: unknown, source = "strategy"): StrategyConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new Error(`${source}: expected an object with a 'kind', got ${JSON.stringify(raw)}`);
  }
  const kind = (raw as { kind?: unknown }).kind;
  if (typeof kind !== "string") {
    throw new Error(`${source}: kind: required, one of ${STRATEGY_KINDS.join(", ")}`);
  }
  if (!byKind.has(kind)) {
    throw new Error(`${source}: kind: unknown strategy '${kind}' (known: ${STRATEGY_KINDS.join(", ")})`);
  }
  const r = strategyDef(kind).schema(strategyConfigSchema).safeParse(raw, READABLE_PARSE);
  if (!r.success) throw new Error(formatIssues(r.error, `${source} '${kind}'`));
  checkRenoisingBases(r.data as { kind: string }, `${source} '${kind}'`);
  return r.data as StrategyConfig;
}

const baseOf = (config: { kind: string }): { kind: string } | undefined => {
  const base = (config as { base?: unknown }).base;
  return base && typeof base === "object" && typeof (base as { kind?: unknown }).kind === "string"
    ? (base as { kind: string })
    : undefined;
};

/** Whether the sampler gets a renoising prediction from `config`: its kind makes one, or a base passes one on. */
function renoises(config: { kind: string }): boolean {
  if (byKind.get(config.kind)?.renoises) return true;
  const base = baseOf(config);
  return base !== undefined && renoises(base);
}

/**
 * Refuses a wrapper that cannot carry a renoising prediction (StrategyDef.refusesRenoisingBase) over a base that
 * makes one, at any depth of `base`, naming the key path.
 */
function checkRenoisingBases(config: { kind: string }, source: string, path = ""): void {
  const base = baseOf(config);
  if (!base) return;
  if (byKind.get(config.kind)?.refusesRenoisingBase && renoises(base)) {
    throw new Error(
      `${source}: ${path}base: '${config.kind}' rebuilds its base's prediction without the renoising one ` +
        `(Prediction.renoise) that '${base.kind}' hands the sampler, so the step would silently be plain guidance; ` +
        "use a base that does not renoise (e.g. cfg instead of cfg++)",
    );
  }
  checkRenoisingBases(base, source, `${path}base.`);
}

const context: BuildContext = { build: (config, models) => buildParsed(config, models) };

function buildParsed(config: { kind: string }, models: GuidanceModels): Strategy {
  const def = strategyDef(config.kind);
  const bag = withGuide(config.kind, config as { model?: unknown }, models, def.guideKeys);
  requireModels(config.kind, bag, def.requires(config));
  return def.build(config, bag, context);
}

/** Validates `raw` and builds the strategy with the given models (missing models are errors naming the key). */
export function buildStrategy(raw: unknown, models: GuidanceModels, source = "strategy"): Strategy {
  return buildParsed(parseStrategyConfig(raw, source), models);
}

/** Every strategy config inside `config` (itself and any nested `base`, term or list of them). */
function nestedConfigs(config: unknown): { kind: string }[] {
  if (Array.isArray(config)) return config.flatMap(nestedConfigs);
  if (!config || typeof config !== "object") return [];
  const own = typeof (config as { kind?: unknown }).kind === "string" ? [config as { kind: string }] : [];
  return [...own, ...Object.values(config).flatMap(nestedConfigs)];
}

/**
 * Refuses a strategy (or a strategy it wraps) paired with a sampler it is not defined for (StrategyDef.samplers),
 * naming `source` (the config key or flag) — before any model runs.
 */
export function checkStrategySampler(
  config: { kind: string },
  sampler: string,
  eta: number | undefined,
  source: string,
): void {
  const effective = samplerEta(sampler, eta);
  for (const c of nestedConfigs(config)) {
    const def = byKind.get(c.kind);
    if (!def?.samplers) continue;
    const ok = def.samplers.some((s) => s.name === sampler && (s.eta === undefined || s.eta === effective));
    if (!ok) {
      const allowed = def.samplers.map((s) => (s.eta === undefined ? s.name : `${s.name} (eta ${s.eta})`));
      throw new Error(
        `${source}: strategy '${c.kind}' is defined for ${allowed.join(", ")} only, not ${sampler}${samplerEta(sampler, undefined) !== effective || effective ? ` (eta ${effective})` : ""}`,
      );
    }
  }
}
