// The app's state: engine, lists, live list stats, toasts.  A tiny store
// with subscriptions; lists are reloaded when engine events say they changed.
import { useEffect, useState } from 'preact/hooks';
import type { ContainerSummary, EngineState, ImageSummary, Network, Volume, Settings } from './types';
import type { Sample } from './lib/stats';
import { affected, debounce, type EngineEvent, type ListName } from './lib/events';
import { getTransport, toBerthError, type BerthError, type StreamHandle, type StreamMsg } from './transport';

export interface Toast {
  id: number;
  kind: 'error' | 'info' | 'success';
  title: string;
  message?: string;
  action?: { label: string; run: () => void };
}

export interface ListState<T> {
  items: T[] | null;
  error?: string;
  loading: boolean;
}

export interface AppState {
  engine: EngineState;
  containers: ListState<ContainerSummary>;
  images: ListState<ImageSummary>;
  volumes: ListState<Volume>;
  networks: ListState<Network>;
  listStats: Record<string, Sample>;
  toasts: Toast[];
  settings: Settings | null;
  /** Ids with an action in progress ("stopping"...). */
  busy: Record<string, string>;
  /** Bumped on every container event (pages reload their inspect data). */
  containerEpoch: number;
}

const emptyList = <T,>(): ListState<T> => ({ items: null, loading: false });

export function initialState(): AppState {
  return {
    engine: { state: 'unknown', host: '' },
    containers: emptyList(),
    images: emptyList(),
    volumes: emptyList(),
    networks: emptyList(),
    listStats: {},
    toasts: [],
    settings: null,
    busy: {},
    containerEpoch: 0,
  };
}

type Listener = () => void;

export class Store<S> {
  private listeners = new Set<Listener>();
  constructor(private state: S) {}
  get(): S {
    return this.state;
  }
  set(patch: Partial<S> | ((s: S) => Partial<S>)) {
    const p = typeof patch === 'function' ? patch(this.state) : patch;
    this.state = { ...this.state, ...p };
    for (const l of this.listeners) l();
  }
  subscribe(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
}

export const store = new Store<AppState>(initialState());

export function useStore<T>(sel: (s: AppState) => T): T {
  const [v, setV] = useState(() => sel(store.get()));
  useEffect(() => {
    const check = () => setV(() => sel(store.get()));
    check();
    return store.subscribe(check);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
  return v;
}

// ---- toasts --------------------------------------------------------------------

let toastId = 1;
export function toast(t: Omit<Toast, 'id'>, ms = t.kind === 'error' ? 0 : 4000): number {
  const id = toastId++;
  store.set((s) => ({ toasts: [...s.toasts, { ...t, id }].slice(-5) }));
  if (ms > 0) setTimeout(() => dismiss(id), ms);
  return id;
}
export function dismiss(id: number) {
  store.set((s) => ({ toasts: s.toasts.filter((t) => t.id !== id) }));
}
export function showError(title: string, e: unknown, action?: Toast['action']): BerthError {
  const err = toBerthError(e);
  toast({ kind: 'error', title, message: err.message, action });
  return err;
}

// ---- lists -----------------------------------------------------------------------

const LIST_CMDS: Record<ListName, string> = {
  containers: 'containers.list',
  images: 'images.list',
  volumes: 'volumes.list',
  networks: 'networks.list',
};

export async function load(list: ListName): Promise<void> {
  store.set((s) => ({ [list]: { ...s[list], loading: true } }) as Partial<AppState>);
  try {
    const items = await getTransport().call<unknown[]>(LIST_CMDS[list], { all: true });
    store.set({ [list]: { items, loading: false } } as Partial<AppState>);
  } catch (e) {
    const err = toBerthError(e);
    store.set((s) => ({ [list]: { items: s[list].items, loading: false, error: err.message } }) as Partial<AppState>);
  }
}

const reloaders: Record<ListName, () => void> = {
  containers: debounce(() => void load('containers'), 120),
  images: debounce(() => void load('images'), 200),
  volumes: debounce(() => void load('volumes'), 200),
  networks: debounce(() => void load('networks'), 200),
};

/** Reloads the lists that were shown at least once. */
export function reloadLoaded(lists: ListName[] = ['containers', 'images', 'volumes', 'networks']) {
  const s = store.get();
  for (const l of lists) if (s[l].items !== null || s[l].error) reloaders[l]();
}

export function onEngineMessage(m: StreamMsg) {
  if (m.type === 'engine') {
    const prev = store.get().engine.state;
    const { type: _t, ...engine } = m;
    store.set({ engine: engine as EngineState });
    if (engine.state === 'running' && prev !== 'running') reloadLoaded();
  } else if (m.type === 'event') {
    const ev = m.event as EngineEvent;
    const lists = affected(ev);
    if (lists.includes('containers')) store.set((s) => ({ containerEpoch: s.containerEpoch + 1 }));
    reloadLoaded(lists);
  } else if (m.type === 'lagged') {
    reloadLoaded();
  }
}

let eventsHandle: StreamHandle | null = null;

/** One events stream for the whole UI (re-opened when the connection comes back). */
export async function subscribeEvents() {
  eventsHandle?.close();
  eventsHandle = await getTransport().open('events', {}, onEngineMessage);
}

// ---- actions ---------------------------------------------------------------------

/** Runs an action on an object, marks it busy, and reports failures in words. */
export async function act<T>(key: string, label: string, fn: () => Promise<T>, failTitle?: string): Promise<T | undefined> {
  store.set((s) => ({ busy: { ...s.busy, [key]: label } }));
  try {
    return await fn();
  } catch (e) {
    showError(failTitle ?? `Could not ${label.toLowerCase().replace(/…$/, '')}`, e);
    return undefined;
  } finally {
    store.set((s) => {
      const busy = { ...s.busy };
      delete busy[key];
      return { busy };
    });
  }
}

export function call<T = unknown>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
  return getTransport().call<T>(cmd, args);
}

// ---- settings & theme --------------------------------------------------------------

export function applyTheme(theme: string) {
  const root = document.documentElement;
  if (theme === 'light' || theme === 'dark') root.dataset.theme = theme;
  else delete root.dataset.theme;
}

export async function loadSettings() {
  try {
    const r = await call<{ settings: Settings }>('settings.get');
    store.set({ settings: r.settings });
    applyTheme(r.settings.theme);
  } catch (e) {
    showError('Could not read the settings', e);
  }
}

export async function saveSettings(patch: Partial<Settings>) {
  try {
    const r = await call<{ settings: Settings }>('settings.set', { settings: patch });
    store.set({ settings: r.settings });
    applyTheme(r.settings.theme);
    return true;
  } catch (e) {
    showError('Could not save the settings', e);
    return false;
  }
}
