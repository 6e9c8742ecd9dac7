// An exclusive lock on a run folder: `<out>/.lock`, created with O_EXCL so exactly one of two racing processes
// gets it (the filesystem decides, not a check-then-write). It holds who took it, so a refusal can say which
// process owns the folder, and a lock left by a process that died (SIGKILL, power loss) can be recognised as
// stale and taken over deliberately with --force, never silently.
import { closeSync, existsSync, openSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";

export const LOCK_FILE = ".lock";

export interface LockInfo {
  pid: number;
  host: string;
  startedAt: string;
  command: string;
}

export interface RunLock {
  path: string;
  info: LockInfo;
  /** Removes the lock if it is still ours; safe to call more than once. */
  release(): void;
}

/** Whether a process with this pid exists on this machine (EPERM: it exists but is not ours). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function readLock(path: string): LockInfo | undefined {
  try {
    const v = JSON.parse(readFileSync(path, "utf8")) as Partial<LockInfo>;
    if (typeof v.pid === "number" && typeof v.host === "string") return v as LockInfo;
  } catch {
    // unreadable or half-written: reported as such below
  }
  return undefined;
}

function describe(info: LockInfo | undefined): string {
  return info
    ? `pid ${info.pid} on ${info.host}, since ${info.startedAt}${info.command ? ` (${info.command})` : ""}`
    : "an unreadable lock";
}

/**
 * Takes `<dir>/.lock` (dir must exist). Refuses while another live process on this host holds it; a lock whose
 * process is gone, or that another host holds (its process cannot be checked from here), is reported and taken
 * over only with `force`.
 */
export function acquireLock(dir: string, opts: { force?: boolean; command?: string } = {}): RunLock {
  const path = join(dir, LOCK_FILE);
  const info: LockInfo = {
    pid: process.pid,
    host: hostname(),
    startedAt: new Date().toISOString(),
    command: opts.command ?? process.argv.slice(2).join(" "),
  };
  const text = `${JSON.stringify(info, null, 2)}\n`;
  const tryCreate = (): boolean => {
    let fd: number;
    try {
      fd = openSync(path, "wx");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw new Error(`${dir}: cannot create the run-folder lock ${path}: ${(e as Error).message}`);
    }
    try {
      writeSync(fd, text);
    } finally {
      closeSync(fd);
    }
    return true;
  };
  if (!tryCreate()) {
    const held = readLock(path);
    const sameHost = held?.host === hostname();
    const live = held !== undefined && sameHost && alive(held.pid);
    if (live) {
      throw new Error(
        `${dir} is in use: locked by ${describe(held)}; wait for it to finish, stop it, or choose another --out`,
      );
    }
    const why =
      held === undefined
        ? `${path} is unreadable`
        : sameHost
          ? `its process ${held.pid} is no longer running`
          : `it was taken on another host (${held.host}), whose process cannot be checked from here`;
    if (!opts.force) {
      throw new Error(
        `${dir} has a lock left by ${describe(held)}: ${why}. If no other sweep or merge writes there, pass --force to take it over`,
      );
    }
    // Take over by rename: readers see the old lock or ours, and a racing --force sees EEXIST on its own create.
    const tmp = `${path}.take-${process.pid}`;
    rmSync(tmp, { force: true });
    const fd = openSync(tmp, "wx");
    try {
      writeSync(fd, text);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  }
  let released = false;
  return {
    path,
    info,
    release() {
      if (released) return;
      released = true;
      const now = readLock(path);
      if (now && now.pid === info.pid && now.host === info.host && now.startedAt === info.startedAt)
        rmSync(path, { force: true });
    },
  };
}

/**
 * Fails fast when a live process on this host holds the folder's lock, before a sweep spends time loading models;
 * the binding check is acquireLock's atomic create.
 */
export function checkNotLocked(dir: string): void {
  const held = lockOf(dir);
  if (held && held.host === hostname() && alive(held.pid) && held.pid !== process.pid) {
    throw new Error(
      `${dir} is in use: locked by ${describe(held)}; wait for it to finish, stop it, or choose another --out`,
    );
  }
}

/** The lock currently on a run folder, if any (for `report` and tests). */
export function lockOf(dir: string): LockInfo | undefined {
  const path = join(dir, LOCK_FILE);
  return existsSync(path) ? readLock(path) : undefined;
}
