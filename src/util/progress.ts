// One progress line for long jobs (training, sweeps): count, rate, ETA and a few figures, redrawn in place on a
// terminal and printed every `every` seconds otherwise (CI logs, background runs redirected to a file).

export function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "?";
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return h > 0
    ? `${h}h${String(m).padStart(2, "0")}m`
    : m > 0
      ? `${m}m${String(sec).padStart(2, "0")}s`
      : `${sec}s`;
}

export class Progress {
  private readonly started = performance.now();
  private lastPrint = 0;
  private readonly tty: boolean;

  constructor(
    readonly label: string,
    readonly total: number,
    readonly startAt = 0,
    readonly every = 10,
    readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = Boolean(stream.isTTY);
  }

  update(done: number, fields: Record<string, string | number> = {}, force = false): void {
    const now = performance.now();
    if (!force && !this.tty && (now - this.lastPrint) / 1000 < this.every) return;
    if (!force && this.tty && now - this.lastPrint < 200) return;
    this.lastPrint = now;
    const elapsed = (now - this.started) / 1000;
    const rate = (done - this.startAt) / Math.max(elapsed, 1e-9);
    const eta = rate > 0 ? (this.total - done) / rate : Number.NaN;
    const width = 24;
    const frac = this.total > 0 ? Math.min(1, done / this.total) : 1;
    const bar = "█".repeat(Math.round(frac * width)).padEnd(width, "·");
    const extra = Object.entries(fields)
      .map(
        ([k, v]) =>
          `${k} ${typeof v === "number" ? (Math.abs(v) < 1e-2 || Math.abs(v) >= 1e4 ? v.toExponential(3) : v.toFixed(4)) : v}`,
      )
      .join("  ");
    const line = `${this.label} ${bar} ${done}/${this.total}  ${rate.toFixed(2)}/s  elapsed ${formatDuration(elapsed)}  ETA ${formatDuration(eta)}  ${extra}`;
    this.stream.write(this.tty ? `\r\x1b[2K${line}` : `${line}\n`);
  }

  /** The last line: at `at` of the total (default all of it; less when stopped early). */
  done(fields: Record<string, string | number> = {}, at = this.total): void {
    this.update(at, fields, true);
    if (this.tty) this.stream.write("\n");
  }
}
