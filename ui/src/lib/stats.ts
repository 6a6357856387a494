// Stats history kept while a container's page is open (tests/stats.test.ts).
import { ibytes, percent } from './format';

export interface Sample {
  t: number;
  cpu: number;
  mem: number;
  memLimit: number;
  netRx: number;
  netTx: number;
  blkRead: number;
  blkWrite: number;
  pids: number;
}

export interface Point {
  t: number;
  cpu: number;
  mem: number;
  memLimit: number;
  rx: number;
  tx: number;
  read: number;
  write: number;
  pids: number;
}

/** Turns cumulative counters into per-second rates; keeps the last `max` points. */
export class History {
  points: Point[] = [];
  private last: Sample | null = null;
  constructor(public max = 300) {}

  add(s: Sample): Point {
    const prev = this.last;
    const dt = prev ? (s.t - prev.t) / 1000 : 0;
    const r = (a: number, b: number) => (prev && dt > 0 && a >= b ? (a - b) / dt : 0);
    const p: Point = {
      t: s.t,
      cpu: s.cpu,
      mem: s.mem,
      memLimit: s.memLimit,
      rx: r(s.netRx, prev?.netRx ?? 0),
      tx: r(s.netTx, prev?.netTx ?? 0),
      read: r(s.blkRead, prev?.blkRead ?? 0),
      write: r(s.blkWrite, prev?.blkWrite ?? 0),
      pids: s.pids,
    };
    this.last = s;
    this.points.push(p);
    if (this.points.length > this.max) this.points.splice(0, this.points.length - this.max);
    return p;
  }

  series<K extends keyof Point>(key: K): number[] {
    return this.points.map((p) => p[key] as number);
  }
}

/** A "nice" axis maximum ≥ v (1, 2, 5 × 10^n). */
export function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const e = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * e) return m * e;
  return 10 * e;
}

/** Whether a new round of the containers list's stats would show the same
 * figures (same containers, CPU and memory as printed): then the list is not
 * re-rendered, so an idle list costs no rendering every 3 s. */
export function sameOnScreen(prev: Record<string, Sample>, next: Record<string, Sample>): boolean {
  const ids = Object.keys(next);
  if (ids.length !== Object.keys(prev).length) return false;
  return ids.every((id) => {
    const a = prev[id];
    const b = next[id];
    return !!a && percent(a.cpu) === percent(b.cpu) && ibytes(a.mem) === ibytes(b.mem);
  });
}
