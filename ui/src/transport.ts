// How the UI reaches crates/host: Tauri commands inside the app, or the
// WebSocket of `berth-desktop --serve-ui` in a browser (e2e tests, dev).
// Both carry the same commands and stream messages.
import type { HostErrorShape } from './types';

export class BerthError extends Error {
  kind: HostErrorShape['kind'];
  status?: number;
  constructor(e: HostErrorShape | string) {
    const shape: HostErrorShape = typeof e === 'string' ? { kind: 'io', message: e } : e;
    super(shape.message || 'unknown error');
    this.kind = shape.kind ?? 'engine';
    this.status = shape.status;
  }
}

export function toBerthError(e: unknown): BerthError {
  if (e instanceof BerthError) return e;
  if (e && typeof e === 'object' && 'message' in e && 'kind' in e) return new BerthError(e as HostErrorShape);
  if (e instanceof Error) return new BerthError({ kind: 'io', message: e.message });
  return new BerthError({ kind: 'io', message: String(e) });
}

export interface StreamMsg {
  type: 'data' | 'end' | 'error' | 'engine' | 'event' | 'lagged';
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  [k: string]: any;
}

export interface StreamHandle {
  id: number;
  close(): void;
}

export interface Transport {
  kind: 'tauri' | 'web';
  call<T = unknown>(cmd: string, args?: Record<string, unknown>): Promise<T>;
  open(kind: string, args: Record<string, unknown>, onMessage: (m: StreamMsg) => void): Promise<StreamHandle>;
  openUrl(url: string): void;
  /** The tray asks for a page ("#/containers/ID/logs") or reports an error. */
  onAppEvent(cb: (name: 'navigate' | 'error', payload: unknown) => void): void;
  /** Called when the connection to the app came back (web transport). */
  onReconnect(cb: () => void): void;
}

// ---- Tauri -------------------------------------------------------------------

async function tauriTransport(): Promise<Transport> {
  const core = await import('@tauri-apps/api/core');
  const event = await import('@tauri-apps/api/event');
  const t: Transport = {
    kind: 'tauri',
    async call<T>(cmd: string, args: Record<string, unknown> = {}) {
      try {
        return (await core.invoke('call', { cmd, args })) as T;
      } catch (e) {
        throw toBerthError(e);
      }
    },
    async open(kind, args, onMessage) {
      const ch = new core.Channel<StreamMsg>();
      ch.onmessage = onMessage;
      let id: number;
      try {
        id = (await core.invoke('open', { kind, args, onMessage: ch })) as number;
      } catch (e) {
        throw toBerthError(e);
      }
      return { id, close: () => void t.call('stream.close', { id }).catch(() => {}) };
    },
    openUrl(url) {
      t.call('open.url', { url }).catch(() => window.open(url, '_blank', 'noopener'));
    },
    onAppEvent(cb) {
      void event.listen<string>('berth://navigate', (e) => cb('navigate', e.payload));
      void event.listen('berth://error', (e) => cb('error', e.payload));
    },
    onReconnect() {},
  };
  return t;
}

// ---- WebSocket (browser) ------------------------------------------------------

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: BerthError) => void;
}

export class WsTransport implements Transport {
  kind = 'web' as const;
  private ws: WebSocket | null = null;
  private ready: Promise<void> | null = null;
  private nextRef = 1;
  private pending = new Map<number, Pending>();
  private listeners = new Map<number, (m: StreamMsg) => void>();
  private reconnectCbs: (() => void)[] = [];
  private everConnected = false;
  private backoff = 250;

  constructor(private url: string) {}

  private connect(): Promise<void> {
    if (this.ready) return this.ready;
    this.ready = new Promise<void>((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.onopen = () => {
        this.backoff = 250;
        const again = this.everConnected;
        this.everConnected = true;
        resolve();
        if (again) this.reconnectCbs.forEach((cb) => cb());
      };
      ws.onmessage = (ev) => this.onMessage(JSON.parse(String(ev.data)));
      ws.onclose = () => {
        const lost = new BerthError({ kind: 'io', message: 'the connection to the Berth app was lost' });
        for (const p of this.pending.values()) p.reject(lost);
        this.pending.clear();
        for (const l of this.listeners.values()) l({ type: 'error', error: { kind: 'io', message: lost.message } });
        this.listeners.clear();
        this.ready = null;
        if (!this.everConnected) reject(new BerthError({ kind: 'io', message: `cannot connect to ${this.url.replace(/token=[^&]+/, 'token=…')}` }));
        else setTimeout(() => void this.connect().catch(() => {}), (this.backoff = Math.min(this.backoff * 2, 3000)));
      };
    });
    return this.ready;
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  private onMessage(m: any) {
    if ('msg' in m) {
      this.listeners.get(m.ref)?.(m.msg);
      return;
    }
    const p = this.pending.get(m.ref);
    if (!p) return;
    this.pending.delete(m.ref);
    if ('error' in m) p.reject(new BerthError(m.error));
    else p.resolve(m.ok);
  }

  private async send(req: Record<string, unknown>): Promise<unknown> {
    await this.connect();
    const ref = this.nextRef++;
    return new Promise((resolve, reject) => {
      this.pending.set(ref, { resolve, reject });
      this.ws!.send(JSON.stringify({ ...req, ref }));
      if (req.op === 'open') this.listeners.set(ref, req.onMessage as (m: StreamMsg) => void);
    });
  }

  async call<T>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    return (await this.send({ op: 'call', cmd, args })) as T;
  }

  async open(kind: string, args: Record<string, unknown>, onMessage: (m: StreamMsg) => void): Promise<StreamHandle> {
    await this.connect();
    const ref = this.nextRef++;
    this.listeners.set(ref, onMessage);
    const res = await new Promise<{ id: number }>((resolve, reject) => {
      this.pending.set(ref, { resolve: resolve as (v: unknown) => void, reject });
      this.ws!.send(JSON.stringify({ op: 'open', ref, kind, args }));
    }).catch((e) => {
      this.listeners.delete(ref);
      throw e;
    });
    return {
      id: res.id,
      close: () => {
        this.listeners.delete(ref);
        void this.call('stream.close', { id: res.id }).catch(() => {});
      },
    };
  }

  openUrl(url: string) {
    window.open(url, '_blank', 'noopener');
  }

  onAppEvent() {}

  onReconnect(cb: () => void) {
    this.reconnectCbs.push(cb);
  }
}

export function wsUrlFromLocation(loc: Location, storage?: Storage): string {
  const params = new URLSearchParams(loc.search);
  let token = params.get('token') ?? '';
  if (token) storage?.setItem('berth-token', token);
  else token = storage?.getItem('berth-token') ?? '';
  const proto = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${loc.host}/api/ws?token=${encodeURIComponent(token)}`;
}

let current: Transport | null = null;

export async function transport(): Promise<Transport> {
  if (current) return current;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  if ((window as any).__TAURI_INTERNALS__) current = await tauriTransport();
  else current = new WsTransport(wsUrlFromLocation(window.location, window.sessionStorage));
  return current;
}

/** For tests: use a fake transport. */
export function setTransport(t: Transport) {
  current = t;
}

export function getTransport(): Transport {
  if (!current) throw new Error('transport not initialised');
  return current;
}
