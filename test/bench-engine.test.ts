import assert from "node:assert/strict";
import { test } from "node:test";
import { benchEngine, formatTable } from "../src/bench/engine.ts";

test("benchEngine quick: every row is a finite positive measurement", async () => {
  for (const backend of ["wasm", "cpu"]) {
    const rows = await benchEngine({ backend, quick: true });
    const names = rows.map((r) => r.name);
    for (const want of [
      "conv3x3 forward",
      "conv3x3 dx (ours)",
      "conv3x3 dw (ours)",
      "UNet train step",
      "UNet forward",
    ]) {
      assert.ok(names.includes(want), `${backend}: missing row ${want}`);
    }
    if (backend === "cpu") assert.ok(names.includes("conv3x3 dw (tf Conv2DBackpropFilter)"));
    for (const r of rows) {
      assert.equal(r.backend, backend);
      assert.ok(Number.isFinite(r.value) && r.value > 0, `${r.name} value ${r.value}`);
      assert.ok(Number.isFinite(r.ms) && r.ms > 0, `${r.name} ms ${r.ms}`);
      assert.ok(r.unit.length > 0 && r.detail.length > 0);
    }
    const table = formatTable(rows);
    assert.equal(table.split("\n").length, rows.length + 2);
  }
});
