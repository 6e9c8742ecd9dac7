// The model-driven verify-reference sections on the golden directory (forwards, gradients and whole sampling
// loops of the official small models), and how a damaged weights file shows up: a failing row naming the file and
// the problem, never a crash.
import assert from "node:assert/strict";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { backendFromEnv, initEngine } from "../src/core/engine.ts";
import { defaultGoldenDir } from "../src/core/paths.ts";
import { onnxUnavailable } from "../src/onnx/runtime.ts";
import { formatRows, type Row, verifyReference } from "../src/verify/index.ts";

const GOLDEN = defaultGoldenDir();
const present = existsSync(join(GOLDEN, "manifest.json")) && existsSync(join(GOLDEN, "weights"));
const skip = present
  ? false
  : `golden reference with weights not found at ${GOLDEN} (set GUIDANCE_LAB_GOLDEN)`;

const tmp = mkdtempSync(join(tmpdir(), "verify-models-test-"));
before(async () => {
  await initEngine(backendFromEnv(), { quiet: true });
});
after(() => rmSync(tmp, { recursive: true, force: true }));

async function runSections(sections: string[], dir = GOLDEN): Promise<Row[]> {
  const { rows } = await verifyReference(dir, sections);
  return rows;
}

function assertAllPass(rows: Row[], sections: string[], cases: RegExp[]): void {
  assert.ok(rows.length > 0, "no rows");
  const bad = rows.filter((r) => !r.pass);
  assert.equal(bad.length, 0, formatRows(bad));
  for (const s of sections)
    assert.ok(
      rows.some((r) => r.section === s),
      `no rows for ${s}`,
    );
  for (const c of cases)
    assert.ok(
      rows.some((r) => c.test(`${r.section} ${r.case}`)),
      `no row matching ${c}`,
    );
}

describe("model sections on the golden reference", { skip }, () => {
  test("single forwards: glide_fwd, gd_unet, gd_classifier, clip", async (tc) => {
    const sections = ["glide_fwd", "gd_unet", "gd_classifier", "clip"];
    const rows = await runSections(sections);
    tc.diagnostic(formatRows(rows));
    assertAllPass(rows, sections, [
      /glide_fwd text_xf_out_NCL/,
      /glide_fwd act_time_embed/,
      /glide_fwd act_input_blocks\.00/,
      /glide_fwd act_middle_block/,
      /glide_fwd act_output_blocks\.00/,
      /glide_fwd out$/,
      /gd_unet fwd_out/,
      /gd_classifier logits/,
      /gd_classifier cond_grad/,
      /clip z_t_raw/,
      /clip z_i$/,
      /clip loss/,
      /clip cond_grad/,
      /clip text_attn_bias/,
      /clip image_attn_bias/,
    ]);
    // One row per block activation the reference ships, each within the single-forward tolerance.
    const acts = rows.filter((r) => r.section === "glide_fwd" && r.case.startsWith("act_"));
    const arrays = JSON.parse(readFileSync(join(GOLDEN, "manifest.json"), "utf8")).arrays as object;
    const listed = Object.keys(arrays).filter((k) => k.startsWith("glide_fwd/act_"));
    assert.equal(acts.length, listed.length, "one row per act_* array");
    assert.ok(
      acts.every((r) => r.tol === 1e-5),
      "1e-5 tolerance",
    );
  });

  test("glide_cfg: recorded replay and the model under the cfg strategy", async (tc) => {
    const rows = await runSections(["glide_cfg"]);
    tc.diagnostic(formatRows(rows));
    assertAllPass(rows, ["glide_cfg"], [/glide_cfg model → cfg strategy output/]);
  });

  // The whole trajectories run on ONNX Runtime, the runtime sweeps use (guide gradients included since they are
  // traced to ONNX graphs): the loops are the same code on either runtime, TensorFlow.js's forwards and gradients
  // are checked above, and on TensorFlow.js these three loops alone took 2 min 53 s of the suite.
  // `guidance-lab verify-reference ../shared/golden --runtime tfjs` remains the full TensorFlow.js check.
  test("with the ONNX runtime selected: forwards and the DDIM, classifier- and CLIP-guided trajectories", async (tc) => {
    const why = await onnxUnavailable();
    if (why) return tc.skip(`onnxruntime-node does not load: ${why}`);
    const sections = ["glide_fwd", "gd_unet", "glide_ddim", "gd_guided", "clip_guided"];
    const { rows } = await verifyReference(GOLDEN, sections, { runtime: "onnx" });
    tc.diagnostic(formatRows(rows));
    assertAllPass(rows, sections, [
      /glide_fwd out \(onnx\)/,
      /gd_unet fwd_out/,
      /glide_ddim trajectory samples/,
      /gd_guided trajectory samples \(classifier scale/,
      /clip_guided trajectory samples \(CLIP scale/,
    ]);
    assert.ok(
      rows.find((r) => r.section === "glide_ddim" && /trajectory/.test(r.case))?.tol === 1e-4,
      "trajectory tolerance",
    );
    for (const r of rows.filter((x) => /fwd_out|trajectory/.test(x.case)))
      assert.match(r.note ?? "", /onnx/, `${r.section} ${r.case}: the note names the runtime`);
  });
});

describe("a golden set without its intermediate arrays", { skip }, () => {
  // Per-block activations, text-encoder outputs, per-step states and derived tables are aids (golden README):
  // what remains (inputs, weights, final outputs) is still checked, and each absent aid is a noted row.
  const sparse = join(tmp, "sparse");
  before(() => {
    mkdirSync(sparse, { recursive: true });
    cpSync(join(GOLDEN, "manifest.json"), join(sparse, "manifest.json"));
    cpSync(join(GOLDEN, "weights"), join(sparse, "weights"), { recursive: true });
    const intermediate = /^(act_|text_xf_|timestep_embedding_raw|step_|samples_full_batch)/;
    for (const section of ["glide_fwd", "glide_cfg"]) {
      mkdirSync(join(sparse, section));
      for (const f of readdirSync(join(GOLDEN, section)))
        if (f.endsWith(".npy") && !intermediate.test(f))
          cpSync(join(GOLDEN, section, f), join(sparse, section, f));
    }
  });

  test("glide_fwd: the output is checked, the activations noted", async (tc) => {
    const { rows, failed, skipped } = await verifyReference(sparse, ["glide_fwd"]);
    tc.diagnostic(formatRows(rows));
    assert.equal(failed, 0, formatRows(rows));
    assert.ok(rows.find((r) => r.case === "out")?.pass, "out.npy compared");
    assert.ok(skipped >= 4, "text outputs, time embedding and block activations noted");
    for (const r of rows.filter((x) => x.skipped)) assert.match(r.note ?? "", /^not in golden set/);
    assert.match(formatRows(rows), /passed, 0 failed, \d+ skipped \(not in golden set\)/);
  });

  test("glide_cfg: without per-step arrays the whole loop runs from its inputs, at the manifest's tolerance", async (tc) => {
    // 20 batched forwards of the small GLIDE: on ONNX Runtime when it loads (TensorFlow.js takes minutes here).
    const onnxMissing = await onnxUnavailable();
    const runtime = onnxMissing ? "tfjs" : "onnx";
    const { rows, failed } = await verifyReference(sparse, ["glide_cfg"], { runtime });
    tc.diagnostic(formatRows(rows));
    assert.equal(failed, 0, formatRows(rows));
    const traj = rows.find((r) => /trajectory samples, model-driven/.test(r.case));
    assert.ok(traj?.pass, "the loop's final samples compared");
    const manifest = JSON.parse(readFileSync(join(GOLDEN, "manifest.json"), "utf8"));
    assert.equal(
      traj?.tol,
      manifest.meta.tolerances.trajectory_final_samples.glide_cfg,
      "the manifest's tolerance",
    );
    assert.equal(
      traj?.tolFrom,
      "manifest meta.tolerances.trajectory_final_samples.glide_cfg",
      "and its source",
    );
    assert.ok(rows.find((r) => r.case === "per-step replay")?.skipped, "the per-step checks noted");
  });
});

// ------------------------------------------------------------------------- damaged weights

interface Entry {
  name: string;
  dtype: string;
  shape: number[];
  bytes: Buffer;
}

function readEntries(path: string): Entry[] {
  const buf = readFileSync(path);
  const len = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + len).toString("utf8")) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const data = buf.subarray(8 + len);
  return Object.entries(header)
    .filter(([n]) => n !== "__metadata__")
    .map(([name, e]) => ({ name, dtype: e.dtype, shape: e.shape, bytes: data.subarray(...e.data_offsets) }))
    .sort((a, b) => a.bytes.byteOffset - b.bytes.byteOffset);
}

function writeEntries(path: string, entries: Entry[]): void {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const e of entries) {
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + e.bytes.length] };
    offset += e.bytes.length;
  }
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([len, json, ...entries.map((e) => e.bytes)]));
}

describe("damaged weights give a failing row naming the file", { skip }, () => {
  const WEIGHTS = "gd_unet_small.safetensors";
  let counter = 0;
  /** A golden directory with only the gd_unet section, whose weights file `damage` rewrites. */
  function damaged(damage: (file: string) => void): string {
    const dir = join(tmp, `case${counter++}`);
    mkdirSync(join(dir, "weights"), { recursive: true });
    cpSync(join(GOLDEN, "manifest.json"), join(dir, "manifest.json"));
    cpSync(join(GOLDEN, "gd_unet"), join(dir, "gd_unet"), { recursive: true });
    const file = join(dir, "weights", WEIGHTS);
    cpSync(join(GOLDEN, "weights", WEIGHTS), file);
    damage(file);
    return dir;
  }

  async function weightsRow(dir: string): Promise<Row> {
    const rows = await runSections(["gd_unet"], dir);
    const bad = rows.filter((r) => !r.pass);
    assert.equal(bad.length, 1, formatRows(rows));
    assert.equal(bad[0]!.case, "weights", "the weights row fails");
    assert.match(bad[0]!.note ?? "", new RegExp(`^weights/${WEIGHTS.replace(".", "\\.")}: `));
    return bad[0]!;
  }

  test("a missing weights file", async () => {
    const row = await weightsRow(damaged((f) => rmSync(f)));
    assert.match(row.note ?? "", /file not found/);
  });

  test("a truncated file", async () => {
    const row = await weightsRow(
      damaged((f) => {
        const b = readFileSync(f);
        writeFileSync(f, b.subarray(0, b.length - 1000));
      }),
    );
    assert.match(row.note ?? "", /truncated file|outside the data section/);
  });

  test("a wrong dtype: header says F32 for F16 data", async () => {
    let victim = "";
    const row = await weightsRow(
      damaged((f) => {
        const entries = readEntries(f);
        const e = entries.find((x) => x.dtype === "F16")!;
        victim = e.name;
        const len = readFileSync(f).readBigUInt64LE(0);
        const buf = readFileSync(f);
        const header = JSON.parse(buf.subarray(8, 8 + Number(len)).toString("utf8"));
        header[victim].dtype = "F32";
        const json = Buffer.from(JSON.stringify(header), "utf8");
        const l = Buffer.alloc(8);
        l.writeBigUInt64LE(BigInt(json.length));
        writeFileSync(f, Buffer.concat([l, json, buf.subarray(8 + Number(len))]));
      }),
    );
    assert.ok(
      (row.note ?? "").includes(`tensor '${victim}'`) && /× F32 needs \d+ bytes/.test(row.note ?? ""),
      row.note,
    );
  });

  test("a wrong dtype: an integer tensor where a float weight belongs", async () => {
    const row = await weightsRow(
      damaged((f) => {
        const entries = readEntries(f);
        const e = entries.find((x) => x.name === "out.2.bias")!;
        e.dtype = "I32";
        e.bytes = Buffer.alloc(4 * e.shape.reduce((a, b) => a * b, 1));
        writeEntries(f, entries);
      }),
    );
    assert.match(row.note ?? "", /wrong dtype for 'out\.2\.bias': I32, expected a float/);
  });

  test("a missing tensor", async () => {
    const row = await weightsRow(
      damaged((f) =>
        writeEntries(
          f,
          readEntries(f).filter((e) => e.name !== "out.2.bias"),
        ),
      ),
    );
    assert.match(
      row.note ?? "",
      /1 missing, 0 unexpected, 0 mis-shaped.*missing tensor 'out\.2\.bias' \(expected shape \[6\]\)/,
    );
  });
});
