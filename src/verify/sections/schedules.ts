// Beta schedules, the respaced tables and every respacing set listed in the manifest.
import { createDiffusion, getNamedBetaSchedule, spaceTimesteps } from "../../core/diffusion.ts";
import {
  compare,
  GoldenError,
  guard,
  type Row,
  type SectionChecker,
  type SectionContext,
  TOL_SINGLE,
} from "../common.ts";
import { checkTables, scheduleAlias } from "../tables.ts";

function run(ctx: SectionContext): Row[] {
  const s = ctx.section;
  const rows: Row[] = [];
  const baseSteps = new Map<string, number>();
  for (const file of ctx.list()) {
    const m = /^betas_(.+)_(\d+)\.npy$/.exec(file);
    if (!m) continue;
    const [, name, steps] = m as unknown as [string, string, string];
    baseSteps.set(name, Number(steps));
    rows.push(
      ...guard(s, `betas ${name} T=${steps}`, () =>
        compare(
          s,
          `betas ${name} T=${steps}`,
          ctx.loadNumbers(file),
          getNamedBetaSchedule(name, Number(steps)),
          TOL_SINGLE,
        ),
      ),
    );
  }
  // Folders such as respaced20_cos: the respacing spec and schedule are in the name, T comes from the betas file.
  for (const dir of ctx.list()) {
    const m = /^respaced(.+)_([a-z0-9_]+)$/.exec(dir);
    if (!m) continue;
    const [, spec, sched] = m as unknown as [string, string, string];
    rows.push(
      ...guard(s, `${dir}`, () => {
        const schedule = scheduleAlias(sched);
        const steps =
          baseSteps.get(schedule) ??
          baseSteps.get(schedule === "cosine" ? "squaredcos_cap_v2" : schedule) ??
          (() => {
            throw new GoldenError(`${ctx.rel(dir)}/: no betas_${schedule}_<T>.npy to take T from`);
          })();
        return checkTables(ctx, dir, createDiffusion({ schedule, steps, respacing: spec }), dir);
      }),
    );
  }
  // Respacing sets: meta.space_timesteps_<T> maps each spec to its sorted kept timesteps.
  const meta = ctx.manifest?.meta ?? {};
  let sets = 0;
  for (const [key, value] of Object.entries(meta)) {
    const m = /^space_timesteps_(\d+)$/.exec(key);
    if (!m) continue;
    const T = Number(m[1]);
    for (const [spec, expected] of Object.entries(value as Record<string, number[]>)) {
      sets++;
      rows.push(
        ...guard(s, `respacing T=${T} "${spec}"`, () => {
          const got = spaceTimesteps(T, spec);
          if (got.length !== expected.length) {
            throw new GoldenError(
              `manifest.json ${key}["${spec}"]: ${expected.length} steps, port gives ${got.length}`,
            );
          }
          return compare(s, `respacing T=${T} "${spec}"`, expected, got, 0);
        }),
      );
    }
  }
  if (sets === 0) {
    rows.push(
      ...guard(s, "respacing sets", () => {
        throw new GoldenError("manifest.json: no meta.space_timesteps_<T> respacing sets");
      }),
    );
  }
  return rows;
}

export const schedules: SectionChecker = { name: "schedules", run };
