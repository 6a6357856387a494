// Log buffer and search (unit-tested in tests/logs.test.ts).

export interface LogLine {
  n: number;
  stream: string;
  /** RFC 3339 time when the engine sent timestamps. */
  time?: string;
  text: string;
}

const TS = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) (.*)$/s;
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;?]*[ -/]*[@-~]/g;

/** Lines from chunks that may split a line anywhere; keeps at most `max` lines. */
export class LogBuffer {
  lines: LogLine[] = [];
  private carry = new Map<string, string>();
  private n = 0;
  constructor(public max = 20000, public timestamps = false) {}

  push(chunks: { s: string; t: string }[]): void {
    for (const c of chunks) {
      const text = (this.carry.get(c.s) ?? '') + c.t;
      const parts = text.split('\n');
      this.carry.set(c.s, parts.pop() ?? '');
      for (const p of parts) this.add(c.s, p);
    }
    if (this.lines.length > this.max) this.lines.splice(0, this.lines.length - this.max);
  }

  /** The partial lines at the end of a finished stream. */
  flush(): void {
    for (const [s, t] of this.carry) if (t) this.add(s, t);
    this.carry.clear();
  }

  private add(stream: string, raw: string) {
    let text = raw.replace(/\r$/, '').replace(ANSI, '');
    let time: string | undefined;
    if (this.timestamps) {
      const m = TS.exec(text);
      if (m) {
        time = m[1];
        text = m[2];
      }
    }
    this.lines.push({ n: ++this.n, stream, time, text });
  }

  clear() {
    this.lines = [];
    this.carry.clear();
  }

  text(): string {
    return this.lines.map((l) => (l.time ? `${l.time} ${l.text}` : l.text)).join('\n') + (this.lines.length ? '\n' : '');
  }
}

export interface Segment {
  text: string;
  hit: boolean;
}

function escapeRe(s: string) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A search pattern: plain text (case-insensitive), or /regex/ when `regex`. Null when empty or invalid. */
export function pattern(query: string, regex = false, caseSensitive = false): RegExp | null {
  if (!query) return null;
  try {
    return new RegExp(regex ? query : escapeRe(query), caseSensitive ? 'g' : 'gi');
  } catch {
    return null;
  }
}

/** Splits a line into plain and highlighted pieces. */
export function highlight(text: string, re: RegExp | null): Segment[] {
  if (!re) return [{ text, hit: false }];
  const out: Segment[] = [];
  let last = 0;
  re.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text))) {
    if (m[0].length === 0) {
      re.lastIndex++;
      continue;
    }
    if (m.index > last) out.push({ text: text.slice(last, m.index), hit: false });
    out.push({ text: m[0], hit: true });
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push({ text: text.slice(last), hit: false });
  return out.length ? out : [{ text, hit: false }];
}

/** Line numbers (`n`) of lines that match. */
export function matches(lines: LogLine[], re: RegExp | null): number[] {
  if (!re) return [];
  const out: number[] = [];
  for (const l of lines) {
    re.lastIndex = 0;
    if (re.test(l.text)) out.push(l.n);
  }
  return out;
}
