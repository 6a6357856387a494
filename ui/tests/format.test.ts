import { describe, expect, it } from 'vitest';
import { ago, bytes, duration, ibytes, percent, shortId, splitRef } from '../src/lib/format';

describe('format', () => {
  it('prints sizes like the docker CLI', () => {
    expect(bytes(0)).toBe('0 B');
    expect(bytes(999)).toBe('999 B');
    expect(bytes(1500)).toBe('1.50 kB');
    expect(bytes(1_980_000)).toBe('1.98 MB');
    expect(bytes(52_400_000)).toBe('52.4 MB');
    expect(bytes(3.2e9)).toBe('3.20 GB');
    expect(bytes(-1)).toBe('—');
    expect(bytes(undefined)).toBe('—');
  });
  it('prints memory in binary units like docker stats', () => {
    expect(ibytes(1024)).toBe('1.00 KiB');
    expect(ibytes(620 * 1024)).toBe('620 KiB');
    expect(ibytes(23.5 * 1024 ** 3)).toBe('23.5 GiB');
  });
  it('percent and ids', () => {
    expect(percent(0.123)).toBe('0.1%');
    expect(percent(57.4)).toBe('57%');
    expect(percent(NaN)).toBe('—');
    expect(shortId('sha256:bb960dff5d82aaaa')).toBe('bb960dff5d82');
  });
  it('durations as docker prints them', () => {
    expect(duration(0)).toBe('Less than a second');
    expect(duration(7)).toBe('7 seconds');
    expect(duration(61)).toBe('About a minute');
    expect(duration(3600 * 5)).toBe('5 hours');
    expect(duration(86400 * 3)).toBe('3 days');
    expect(ago(1000, 1_061_000)).toBe('About a minute ago');
  });
  it('splits references', () => {
    expect(splitRef('busybox:latest')).toEqual({ repo: 'busybox', tag: 'latest' });
    expect(splitRef('127.0.0.1:5000/a/b')).toEqual({ repo: '127.0.0.1:5000/a/b', tag: 'latest' });
    expect(splitRef('127.0.0.1:5000/a/b:v2')).toEqual({ repo: '127.0.0.1:5000/a/b', tag: 'v2' });
    expect(splitRef('x@sha256:0123456789abcdef')).toEqual({ repo: 'x', tag: '@0123456789ab' });
  });
});
