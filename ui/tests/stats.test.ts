import { describe, expect, it } from 'vitest';
import { History, niceMax, sameOnScreen } from '../src/lib/stats';

const s = (t: number, rx: number, read: number) => ({ t, cpu: 5, mem: 100, memLimit: 1000, netRx: rx, netTx: 0, blkRead: read, blkWrite: 0, pids: 1 });

describe('stats history', () => {
  it('turns counters into rates and keeps a window', () => {
    const h = new History(3);
    expect(h.add(s(1000, 0, 0)).rx).toBe(0);
    expect(h.add(s(2000, 1000, 4096)).rx).toBe(1000);
    expect(h.add(s(4000, 3000, 4096)).rx).toBe(1000);
    h.add(s(5000, 3000, 8192));
    expect(h.points.length).toBe(3);
    expect(h.series('read')).toEqual([4096, 0, 4096]);
  });
  it('a counter reset (restart) gives 0, not a negative rate', () => {
    const h = new History();
    h.add(s(1000, 5000, 0));
    expect(h.add(s(2000, 10, 0)).rx).toBe(0);
  });
  it('nice axis maxima', () => {
    expect(niceMax(0)).toBe(1);
    expect(niceMax(0.13)).toBeCloseTo(0.2);
    expect(niceMax(3)).toBe(5);
    expect(niceMax(70)).toBe(100);
    expect(niceMax(100)).toBe(100);
  });
});

describe('list stats on screen', () => {
  const smp = (cpu: number, mem: number) => ({ t: Date.now(), cpu, mem, memLimit: 0, netRx: 0, netTx: 0, blkRead: 0, blkWrite: 0, pids: 1 });
  it('a round that prints the same figures is the same on screen', () => {
    const a = { x: smp(0.01, 253952), y: smp(12.2, 5 * 1024 * 1024) };
    expect(sameOnScreen(a, { x: smp(0.02, 253952), y: smp(11.9, 5 * 1024 * 1024 + 100) })).toBe(true);
    expect(sameOnScreen(a, { x: smp(0.2, 253952), y: smp(12.2, 5 * 1024 * 1024) })).toBe(false);
    expect(sameOnScreen(a, { x: smp(0.01, 300000), y: smp(12.2, 5 * 1024 * 1024) })).toBe(false);
    expect(sameOnScreen(a, { x: smp(0.01, 253952) })).toBe(false);
    expect(sameOnScreen(a, { x: smp(0.01, 253952), z: smp(12.2, 5 * 1024 * 1024) })).toBe(false);
    expect(sameOnScreen({}, {})).toBe(true);
  });
});
