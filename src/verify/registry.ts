// Every section the verifier knows, in the order they run: the cheap table and primitive checks first, then the
// single forwards of each model, then the sampling loops (which re-run those models many times).
import type { SectionChecker } from "./common.ts";
import { clip } from "./sections/clip.ts";
import { clipGuided } from "./sections/clip_guided.ts";
import { gdClassifier } from "./sections/gd_classifier.ts";
import { gdGuided } from "./sections/gd_guided.ts";
import { gdUnet } from "./sections/gd_unet.ts";
import { glideCfg } from "./sections/glide_cfg.ts";
import { glideDdim } from "./sections/glide_ddim.ts";
import { glideFwd } from "./sections/glide_fwd.ts";
import { kdiffusion } from "./sections/kdiffusion.ts";
import { schedules } from "./sections/schedules.ts";
import { unit } from "./sections/unit.ts";

export const SECTIONS: readonly SectionChecker[] = [
  schedules,
  unit,
  glideFwd,
  gdUnet,
  gdClassifier,
  clip,
  glideCfg,
  glideDdim,
  gdGuided,
  clipGuided,
  kdiffusion,
];
