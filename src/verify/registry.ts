// Every section the verifier knows, in the order they run. A new section is one file in sections/ plus one entry
// here (e.g. glide_fwd, gd_unet once their models are ported).
import type { SectionChecker } from "./common.ts";
import { clip } from "./sections/clip.ts";
import { gdGuided } from "./sections/gd_guided.ts";
import { glideCfg } from "./sections/glide_cfg.ts";
import { glideDdim } from "./sections/glide_ddim.ts";
import { schedules } from "./sections/schedules.ts";
import { unit } from "./sections/unit.ts";

export const SECTIONS: readonly SectionChecker[] = [schedules, unit, glideCfg, glideDdim, gdGuided, clip];
