// Container list logic: names, ports, state colours, compose grouping, filters.
import type { ContainerSummary, PortEntry } from '../types';

export function name(c: { Names?: string[] | null; Id: string }): string {
  const n = c.Names?.[0];
  return n ? n.replace(/^\//, '') : c.Id.slice(0, 12);
}

export const COMPOSE_PROJECT = 'com.docker.compose.project';
export const COMPOSE_SERVICE = 'com.docker.compose.service';

export interface PortLink {
  label: string;
  url?: string;
  key: string;
}

/** Published ports as links (IPv4 and IPv6 bindings of one port shown once). */
export function ports(ps: PortEntry[] | null | undefined): PortLink[] {
  const seen = new Set<string>();
  const out: PortLink[] = [];
  const sorted = [...(ps ?? [])].sort((a, b) => (a.PrivatePort ?? 0) - (b.PrivatePort ?? 0) || (a.PublicPort ?? 0) - (b.PublicPort ?? 0));
  for (const p of sorted) {
    const type = p.Type || 'tcp';
    if (p.PublicPort) {
      const key = `${p.PublicPort}:${p.PrivatePort}/${type}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const host = !p.IP || p.IP === '0.0.0.0' || p.IP === '::' ? 'localhost' : p.IP.includes(':') ? `[${p.IP}]` : p.IP;
      out.push({ key, label: key, url: type === 'tcp' ? `http://${host}:${p.PublicPort}` : undefined });
    } else {
      const key = `${p.PrivatePort}/${type}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push({ key, label: key });
    }
  }
  return out;
}

export type StateTone = 'running' | 'paused' | 'restarting' | 'exited' | 'created' | 'dead' | 'unknown';

export function tone(state: string | undefined): StateTone {
  switch (state) {
    case 'running':
    case 'paused':
    case 'restarting':
    case 'exited':
    case 'created':
    case 'dead':
      return state;
    case 'removing':
      return 'dead';
    default:
      return 'unknown';
  }
}

export const isRunning = (c: ContainerSummary) => c.State === 'running' || c.State === 'restarting';

export interface Group {
  project: string | null;
  containers: ContainerSummary[];
  running: number;
}

/** Compose projects first (by name), then the containers of no project. */
export function groupByProject(list: ContainerSummary[]): Group[] {
  const map = new Map<string | null, ContainerSummary[]>();
  for (const c of list) {
    const p = c.Labels?.[COMPOSE_PROJECT] || null;
    if (!map.has(p)) map.set(p, []);
    map.get(p)!.push(c);
  }
  const groups: Group[] = [];
  for (const [project, cs] of map) {
    cs.sort((a, b) => name(a).localeCompare(name(b)));
    groups.push({ project, containers: cs, running: cs.filter(isRunning).length });
  }
  groups.sort((a, b) => (a.project === null ? 1 : 0) - (b.project === null ? 1 : 0) || (a.project ?? '').localeCompare(b.project ?? ''));
  return groups;
}

export type StatusFilter = 'all' | 'running' | 'stopped';

export function filter(list: ContainerSummary[], query: string, status: StatusFilter): ContainerSummary[] {
  const q = query.trim().toLowerCase();
  return list.filter((c) => {
    if (status === 'running' && !isRunning(c) && c.State !== 'paused') return false;
    if (status === 'stopped' && (isRunning(c) || c.State === 'paused')) return false;
    if (!q) return true;
    const hay = [name(c), c.Image, c.Id, c.Labels?.[COMPOSE_PROJECT] ?? '', c.Labels?.[COMPOSE_SERVICE] ?? '', ...ports(c.Ports).map((p) => p.label)]
      .join(' ')
      .toLowerCase();
    return hay.includes(q);
  });
}
