import { describe, expect, it } from 'vitest';
import { LogBuffer, highlight, matches, pattern } from '../src/lib/logs';

describe('log buffer', () => {
  it('joins lines split across chunks, per stream', () => {
    const b = new LogBuffer();
    b.push([
      { s: 'stdout', t: 'hel' },
      { s: 'stderr', t: 'oops\nhalf' },
      { s: 'stdout', t: 'lo\nwor' },
    ]);
    expect(b.lines.map((l) => [l.stream, l.text])).toEqual([
      ['stderr', 'oops'],
      ['stdout', 'hello'],
    ]);
    b.push([{ s: 'stdout', t: 'ld\r\n' }]);
    expect(b.lines.at(-1)!.text).toBe('world');
    b.flush();
    expect(b.lines.at(-1)!.text).toBe('half');
  });
  it('parses timestamps and strips colours', () => {
    const b = new LogBuffer(100, true);
    b.push([{ s: 'stdout', t: '2024-05-01T10:00:00.123456789Z \x1b[32mready\x1b[0m\n' }]);
    expect(b.lines[0].time).toBe('2024-05-01T10:00:00.123456789Z');
    expect(b.lines[0].text).toBe('ready');
    expect(b.text()).toBe('2024-05-01T10:00:00.123456789Z ready\n');
  });
  it('keeps at most max lines', () => {
    const b = new LogBuffer(3);
    b.push([{ s: 'stdout', t: '1\n2\n3\n4\n5\n' }]);
    expect(b.lines.map((l) => l.text)).toEqual(['3', '4', '5']);
    expect(b.lines[0].n).toBe(3);
  });
});

describe('log search', () => {
  it('highlights every match, case-insensitively', () => {
    const re = pattern('err');
    expect(highlight('Error: err', re)).toEqual([
      { text: 'Err', hit: true },
      { text: 'or: ', hit: false },
      { text: 'err', hit: true },
    ]);
  });
  it('escapes plain text and accepts regexes', () => {
    expect(highlight('a.b axb', pattern('a.b'))).toEqual([
      { text: 'a.b', hit: true },
      { text: ' axb', hit: false },
    ]);
    expect(highlight('a.b axb', pattern('a.b', true)).filter((s) => s.hit).length).toBe(2);
    expect(pattern('(', true)).toBeNull();
    expect(pattern('')).toBeNull();
    expect(highlight('x', null)).toEqual([{ text: 'x', hit: false }]);
  });
  it('lists matching line numbers', () => {
    const b = new LogBuffer();
    b.push([{ s: 'stdout', t: 'GET /\nPOST /x\nget /y\n' }]);
    expect(matches(b.lines, pattern('get'))).toEqual([1, 3]);
  });
});
