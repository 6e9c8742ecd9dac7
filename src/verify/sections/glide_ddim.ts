// GLIDE's DDIM loop. Its trajectory needs the GLIDE model (ported in a later issue), so only the respacing is
// checked here, and the row says so.
import { spaceTimesteps } from "../../core/diffusion.ts";
import { compare, guard, type Row, type SectionChecker, type SectionContext } from "../common.ts";

function run(ctx: SectionContext): Row[] {
  const s = ctx.section;
  return guard(s, "timestep_map", () => {
    const spec = String(ctx.meta("glide_ddim", "respacing"));
    const T = Number(ctx.meta("small_glide", "diffusion_steps"));
    const got = spaceTimesteps(T, spec);
    const note = "trajectory not checked: it needs the GLIDE model (later issue)";
    const rows = [
      compare(s, `timestep_map "${spec}" (T=${T})`, ctx.loadNumbers("timestep_map.npy"), got, 0, note),
    ];
    const listed = ctx.manifest?.meta?.glide_ddim as { timestep_map?: number[] } | undefined;
    if (listed?.timestep_map)
      rows.push(compare(s, "manifest meta.glide_ddim.timestep_map", listed.timestep_map, got, 0));
    return rows;
  });
}

export const glideDdim: SectionChecker = { name: "glide_ddim", run };
