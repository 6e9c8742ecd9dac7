// guided-diffusion's classifier-guided loop. The trajectory needs the UNet and the classifier (later issues), so
// only its diffusion tables (cosine schedule, respacing from the manifest) are checked now.
import { guard, type Row, type SectionChecker, type SectionContext } from "../common.ts";
import { checkTables, diffusionFromMeta } from "../tables.ts";

function run(ctx: SectionContext): Row[] {
  const rows = guard(ctx.section, "diffusion", () =>
    checkTables(ctx, "diffusion", diffusionFromMeta(ctx, "small_gd_model"), "diffusion"),
  );
  const last = rows.at(-1);
  if (last && last.note === undefined) {
    last.note = "trajectory not checked: it needs the guided-diffusion UNet and classifier (later issue)";
  }
  return rows;
}

export const gdGuided: SectionChecker = { name: "gd_guided", run };
