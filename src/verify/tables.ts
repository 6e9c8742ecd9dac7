// Diffusion-table checks shared by every section that ships a `diffusion/` folder of the official tables.
import {
  createDiffusion,
  type DiffusionTables,
  type GaussianDiffusion,
  type ModelVarType,
  type ScheduleName,
} from "../core/diffusion.ts";
import { compare, GoldenError, guard, type Row, type SectionContext, skipRow, TOL_SINGLE } from "./common.ts";

/** The reference's schedule names; "cos"/"lin" are the abbreviations used in folder names. */
export function scheduleAlias(name: string): ScheduleName {
  if (name === "cos" || name === "cosine") return "cosine";
  if (name === "lin" || name === "linear") return "linear";
  if (name === "squaredcos_cap_v2") return name;
  throw new GoldenError(`unknown noise schedule '${name}'`);
}

/**
 * Diffusion of a model config in manifest.meta (noise_schedule, diffusion_steps, timestep_respacing, and
 * learn_sigma when present; GLIDE's configs omit it because its models always learn the variance range).
 */
export function diffusionFromMeta(
  ctx: SectionContext,
  configKey: string,
  modelVarType?: ModelVarType,
): GaussianDiffusion {
  const schedule = scheduleAlias(ctx.meta<string>(configKey, "noise_schedule"));
  const steps = Number(ctx.meta(configKey, "diffusion_steps"));
  const respacing = String(ctx.meta(configKey, "timestep_respacing") ?? "");
  const learn = (ctx.manifest?.meta?.[configKey] as { learn_sigma?: boolean } | undefined)?.learn_sigma;
  return createDiffusion({
    schedule,
    steps,
    respacing,
    modelVarType: modelVarType ?? (learn === false ? "fixed_small" : "learned_range"),
  });
}

const camel = (snake: string) => snake.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** Compares every table file in `<section>/<sub>` against `diffusion`; unknown file names are skipped. */
export function checkTables(
  ctx: SectionContext,
  sub: string,
  diffusion: GaussianDiffusion,
  label: string,
): Row[] {
  const files = ctx.list(sub).filter((f) => f.endsWith(".npy"));
  // The tables are derived from the manifest's schedule (an aid for locating a difference), not an input.
  if (files.length === 0)
    return [skipRow(ctx.section, `${label} tables`, `${ctx.rel(sub)}/ holds no tables`)];
  const rows: Row[] = [];
  for (const file of files) {
    const stem = file.replace(/\.npy$/, "");
    const name = `${sub}/${file}`;
    if (stem === "timestep_map") {
      rows.push(
        ...guard(ctx.section, `${label} timestep_map`, () =>
          compare(ctx.section, `${label} timestep_map`, ctx.loadNumbers(name), diffusion.timestepMap, 0),
        ),
      );
      continue;
    }
    const key = camel(stem) as keyof DiffusionTables;
    const table = (diffusion as unknown as Partial<DiffusionTables>)[key];
    if (!(table instanceof Float64Array)) continue;
    rows.push(
      ...guard(ctx.section, `${label} ${stem}`, () =>
        compare(ctx.section, `${label} ${stem}`, ctx.loadNumbers(name), table, TOL_SINGLE),
      ),
    );
  }
  return rows;
}
