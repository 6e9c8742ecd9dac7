// Layer primitives checked in isolation: the sinusoidal timestep embedding for every dim the reference ships.

import { tf } from "../../core/engine.ts";
import { timestepEmbedding } from "../../core/layers.ts";
import {
  compare,
  floats,
  GoldenError,
  guard,
  type Row,
  type SectionChecker,
  type SectionContext,
  TOL_SINGLE,
} from "../common.ts";

function run(ctx: SectionContext): Row[] {
  const s = ctx.section;
  const rows: Row[] = [];
  const files = ctx.list().filter((f) => /^timestep_embedding_dim\d+\.npy$/.test(f));
  if (files.length === 0) {
    return guard(s, "timestep embedding", () => {
      throw new GoldenError(`${s}/: no timestep_embedding_dim*.npy files`);
    });
  }
  for (const file of files) {
    const dim = Number(/dim(\d+)/.exec(file)![1]);
    const label = `timestep embedding dim ${dim}`;
    rows.push(
      ...guard(s, label, () => {
        const t = ctx.loadNumbers("timestep_embedding_t.npy");
        const ref = ctx.load(file);
        if (ref.shape[0] !== t.length || ref.shape[1] !== dim) {
          throw new GoldenError(
            `${ctx.rel(file)}: shape [${ref.shape.join(", ")}], expected [${t.length}, ${dim}]`,
          );
        }
        const got = tf
          .tidy(() => timestepEmbedding(tf.tensor1d(t, "float32"), dim))
          .dataSync() as Float32Array;
        return compare(s, label, floats(ref, file), got, TOL_SINGLE);
      }),
    );
  }
  return rows;
}

export const unit: SectionChecker = { name: "unit", run };
