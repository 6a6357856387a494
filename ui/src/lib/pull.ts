// Aggregates Docker's pull/push JSON progress stream into per-layer bars and
// an overall figure (unit-tested in tests/pull.test.ts).

export interface ProgressMessage {
  id?: string;
  status?: string;
  progress?: string;
  progressDetail?: { current?: number; total?: number } | null;
  progress_detail?: { current?: number; total?: number } | null;
  error?: string;
}

export type Phase = 'waiting' | 'downloading' | 'verifying' | 'extracting' | 'done' | 'exists';

export interface Layer {
  id: string;
  phase: Phase;
  status: string;
  current: number;
  total: number;
  /** Fraction 0..1 of this layer's work (download counts 70 %, extraction 30 %). */
  fraction: number;
}

export interface PullState {
  layers: Layer[];
  /** Lines without a layer id: "Pulling from library/busybox", "Digest: ...", "Status: ...". */
  messages: string[];
  error?: string;
  done: boolean;
  downloaded: number;
  total: number;
  /** 0..1 over every layer; layers whose size is not known yet count as 0. */
  fraction: number;
}

export function initial(): PullState {
  return { layers: [], messages: [], done: false, downloaded: 0, total: 0, fraction: 0 };
}

const isLayerId = (id: string) => /^[0-9a-f]{12,64}$/.test(id);

function phaseOf(status: string): Phase | null {
  const s = status.toLowerCase();
  if (s.startsWith('pulling fs layer') || s.startsWith('waiting') || s.startsWith('preparing')) return 'waiting';
  if (s.startsWith('downloading') || s.startsWith('pushing')) return 'downloading';
  if (s.startsWith('verifying') || s.startsWith('download complete')) return 'verifying';
  if (s.startsWith('extracting')) return 'extracting';
  if (s.startsWith('pull complete') || s.startsWith('pushed')) return 'done';
  if (s.startsWith('already exists') || s.startsWith('layer already exists') || s.startsWith('mounted from')) return 'exists';
  return null;
}

function layerFraction(l: Layer): number {
  switch (l.phase) {
    case 'waiting':
      return 0;
    case 'downloading':
      return l.total > 0 ? 0.7 * Math.min(1, l.current / l.total) : 0;
    case 'verifying':
      return 0.7;
    case 'extracting':
      return 0.7 + (l.total > 0 ? 0.3 * Math.min(1, l.current / l.total) : 0);
    case 'done':
    case 'exists':
      return 1;
  }
}

/** Applies one message; returns a new state (the old one is not changed). */
export function apply(state: PullState, m: ProgressMessage): PullState {
  const next: PullState = { ...state, layers: state.layers, messages: state.messages };
  if (m.error) {
    next.error = m.error;
    return next;
  }
  const status = m.status ?? '';
  const id = m.id ?? '';
  const phase = phaseOf(status);
  if (id && isLayerId(id) && phase) {
    const layers = [...state.layers];
    let i = layers.findIndex((l) => l.id === id);
    if (i < 0) {
      layers.push({ id, phase: 'waiting', status: '', current: 0, total: 0, fraction: 0 });
      i = layers.length - 1;
    }
    const old = layers[i];
    const detail = m.progressDetail ?? m.progress_detail ?? {};
    const l: Layer = { ...old, phase, status };
    if (phase === 'downloading') {
      if (detail.total) l.total = detail.total;
      if (detail.current != null) l.current = detail.current;
    } else if (phase === 'extracting') {
      // Extraction reports its own bytes; keep the download size as the total.
      if (detail.total) l.total = detail.total;
      if (detail.current != null) l.current = detail.current;
    } else if (phase === 'verifying' || phase === 'done') {
      l.current = l.total;
    }
    l.fraction = layerFraction(l);
    layers[i] = l;
    next.layers = layers;
  } else if (status) {
    const line = id && !isLayerId(id) ? `${id}: ${status}` : status;
    next.messages = [...state.messages, line];
    if (/^status: /i.test(status) || /^digest: /i.test(status)) next.done = next.done || /^status: /i.test(status);
  }
  let downloaded = 0;
  let total = 0;
  let sum = 0;
  for (const l of next.layers) {
    sum += l.fraction;
    if (l.phase === 'exists') continue;
    total += l.total;
    downloaded += l.phase === 'downloading' ? l.current : l.phase === 'waiting' ? 0 : l.total;
  }
  next.downloaded = downloaded;
  next.total = total;
  next.fraction = next.layers.length ? sum / next.layers.length : next.done ? 1 : 0;
  return next;
}

export function applyAll(state: PullState, ms: ProgressMessage[]): PullState {
  return ms.reduce(apply, state);
}

export function finish(state: PullState): PullState {
  return { ...state, done: true, fraction: state.error ? state.fraction : 1 };
}
