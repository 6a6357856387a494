import { describe, expect, it } from 'vitest';
import { apply, applyAll, finish, initial } from '../src/lib/pull';

const A = 'aaaaaaaaaaaa';
const B = 'bbbbbbbbbbbb';

describe('pull progress', () => {
  it('follows each layer through download and extraction', () => {
    let s = applyAll(initial(), [
      { status: 'Pulling from library/busybox', id: 'latest' },
      { status: 'Pulling fs layer', id: A },
      { status: 'Pulling fs layer', id: B },
    ]);
    expect(s.layers.map((l) => l.phase)).toEqual(['waiting', 'waiting']);
    expect(s.messages).toEqual(['latest: Pulling from library/busybox']);
    expect(s.fraction).toBe(0);

    s = apply(s, { status: 'Downloading', id: A, progressDetail: { current: 50, total: 100 }, progress: '[==>  ]' });
    expect(s.layers[0].phase).toBe('downloading');
    expect(s.layers[0].fraction).toBeCloseTo(0.35);
    expect(s.downloaded).toBe(50);
    expect(s.total).toBe(100);
    expect(s.fraction).toBeCloseTo(0.175);

    s = apply(s, { status: 'Downloading', id: B, progressDetail: { current: 100, total: 300 } });
    expect(s.total).toBe(400);
    expect(s.downloaded).toBe(150);

    s = applyAll(s, [
      { status: 'Verifying Checksum', id: A },
      { status: 'Download complete', id: A },
      { status: 'Extracting', id: A, progressDetail: { current: 50, total: 100 } },
    ]);
    expect(s.layers[0].phase).toBe('extracting');
    expect(s.layers[0].fraction).toBeCloseTo(0.85);
    s = apply(s, { status: 'Pull complete', id: A });
    expect(s.layers[0].fraction).toBe(1);
    expect(s.downloaded).toBe(200);
  });

  it('layers already present count as done and not as downloads', () => {
    const s = applyAll(initial(), [
      { status: 'Already exists', id: A },
      { status: 'Pulling fs layer', id: B },
      { status: 'Downloading', id: B, progress_detail: { current: 10, total: 10 } },
      { status: 'Pull complete', id: B },
      { status: 'Digest: sha256:abc' },
      { status: 'Status: Downloaded newer image for busybox:latest' },
    ]);
    expect(s.layers.map((l) => l.phase)).toEqual(['exists', 'done']);
    expect(s.total).toBe(10);
    expect(s.fraction).toBe(1);
    expect(s.done).toBe(true);
    expect(s.messages.at(-1)).toContain('Downloaded newer image');
  });

  it('keeps the error and the order of first appearance', () => {
    let s = apply(initial(), { status: 'Pulling fs layer', id: B });
    s = apply(s, { status: 'Pulling fs layer', id: A });
    s = apply(s, { error: 'manifest unknown' });
    expect(s.layers.map((l) => l.id)).toEqual([B, A]);
    expect(s.error).toBe('manifest unknown');
    expect(finish(s).fraction).toBe(0);
  });

  it('does not change the state it is given', () => {
    const s0 = apply(initial(), { status: 'Pulling fs layer', id: A });
    const before = JSON.stringify(s0);
    apply(s0, { status: 'Downloading', id: A, progressDetail: { current: 1, total: 2 } });
    expect(JSON.stringify(s0)).toBe(before);
  });

  it('reads push progress too', () => {
    const s = applyAll(initial(), [
      { status: 'Preparing', id: A },
      { status: 'Pushing', id: A, progressDetail: { current: 5, total: 10 } },
      { status: 'Pushed', id: A },
      { status: 'latest: digest: sha256:abc size: 527' },
    ]);
    expect(s.layers[0].phase).toBe('done');
    expect(s.fraction).toBe(1);
  });
});
