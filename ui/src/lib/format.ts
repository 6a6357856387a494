// Formatting helpers shared by the views (unit-tested in tests/format.test.ts).

/** Sizes the way the docker CLI prints them: decimal units (kB, MB, GB). */
export function bytes(n: number | null | undefined): string {
  if (n == null || !isFinite(n) || n < 0) return '—';
  if (n < 1000) return `${Math.round(n)} B`;
  const units = ['kB', 'MB', 'GB', 'TB', 'PB'];
  let v = n;
  let i = -1;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** Memory the way `docker stats` prints it: binary units (KiB, MiB, GiB). */
export function ibytes(n: number | null | undefined): string {
  if (n == null || !isFinite(n) || n < 0) return '—';
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = -1;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function rate(bytesPerSec: number): string {
  return `${bytes(bytesPerSec)}/s`;
}

export function percent(p: number | null | undefined): string {
  if (p == null || !isFinite(p)) return '—';
  return `${p < 10 ? p.toFixed(1) : Math.round(p)}%`;
}

/** "sha256:abcdef..." → "abcdef012345" (12 characters, as docker prints ids). */
export function shortId(id: string | null | undefined): string {
  if (!id) return '';
  return id.replace(/^sha256:/, '').slice(0, 12);
}

/** "3 minutes ago", from Unix seconds. */
export function ago(unixSeconds: number | null | undefined, nowMs = Date.now()): string {
  if (!unixSeconds) return '—';
  const s = Math.max(0, Math.round(nowMs / 1000 - unixSeconds));
  return `${duration(s)} ago`;
}

/** Human duration as docker prints it ("Less than a second", "5 minutes", "2 hours"). */
export function duration(seconds: number): string {
  const s = Math.floor(seconds);
  if (s < 1) return 'Less than a second';
  if (s < 60) return `${s} second${s === 1 ? '' : 's'}`;
  const m = Math.floor(s / 60);
  if (m < 60) return m === 1 ? 'About a minute' : `${m} minutes`;
  const h = Math.floor(m / 60);
  if (h < 48) return h === 1 ? 'About an hour' : `${h} hours`;
  const d = Math.floor(h / 24);
  if (d < 14) return `${d} days`;
  if (d < 60) return `${Math.floor(d / 7)} weeks`;
  if (d < 730) return `${Math.floor(d / 30)} months`;
  return `${Math.floor(d / 365)} years`;
}

export function date(unixSeconds: number | string | null | undefined): string {
  if (unixSeconds == null || unixSeconds === '') return '—';
  const d = typeof unixSeconds === 'number' ? new Date(unixSeconds * 1000) : new Date(unixSeconds);
  if (isNaN(d.getTime()) || d.getFullYear() < 1971) return '—';
  return d.toLocaleString();
}

/** The repository and tag of "registry:5000/a/b:tag" (digest refs keep their digest). */
export function splitRef(ref: string): { repo: string; tag: string } {
  if (ref.includes('@')) {
    const [repo, digest] = ref.split('@');
    return { repo, tag: '@' + shortId(digest) };
  }
  const slash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  if (colon > slash) return { repo: ref.slice(0, colon), tag: ref.slice(colon + 1) };
  return { repo: ref, tag: 'latest' };
}

export function plural(n: number, word: string, pluralWord = word + 's'): string {
  return `${n} ${n === 1 ? word : pluralWord}`;
}
