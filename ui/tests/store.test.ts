import { beforeEach, describe, expect, it, vi } from 'vitest';
import { act, initialState, onEngineMessage, store, toast } from '../src/store';
import { BerthError, setTransport, wsUrlFromLocation, type Transport } from '../src/transport';

function fakeTransport(calls: string[], fail?: BerthError): Transport {
  return {
    kind: 'web',
    async call<T>(cmd: string) {
      calls.push(cmd);
      if (fail) throw fail;
      return [] as T;
    },
    async open() {
      return { id: 1, close() {} };
    },
    openUrl() {},
    onAppEvent() {},
    onReconnect() {},
  };
}

describe('store', () => {
  beforeEach(() => {
    store.set(initialState());
    vi.useRealTimers();
  });

  it('engine messages update the state and reload shown lists when it comes back', async () => {
    vi.useFakeTimers();
    const calls: string[] = [];
    setTransport(fakeTransport(calls));
    store.set({ containers: { items: [], loading: false } });
    onEngineMessage({ type: 'engine', state: 'stopped', host: 'unix:///x', error: { kind: 'engine_unreachable', message: 'gone' } });
    expect(store.get().engine.state).toBe('stopped');
    expect(store.get().engine.error?.message).toBe('gone');
    onEngineMessage({ type: 'engine', state: 'running', host: 'unix:///x', version: '0.1' });
    await vi.advanceTimersByTimeAsync(300);
    // Only the list that was shown is reloaded.
    expect(calls).toEqual(['containers.list']);
  });

  it('a burst of container events reloads the list once', async () => {
    vi.useFakeTimers();
    const calls: string[] = [];
    setTransport(fakeTransport(calls));
    store.set({ containers: { items: [], loading: false }, images: { items: [], loading: false } });
    for (const a of ['create', 'start', 'start', 'die']) onEngineMessage({ type: 'event', event: { Type: 'container', Action: a } });
    await vi.advanceTimersByTimeAsync(500);
    expect(calls.filter((c) => c === 'containers.list').length).toBe(1);
    expect(calls.filter((c) => c === 'images.list').length).toBe(1);
    expect(store.get().containerEpoch).toBe(4);
  });

  it('a failing action becomes an error toast with the engine message', async () => {
    setTransport(fakeTransport([], new BerthError({ kind: 'conflict', message: 'conflict: image is being used by running container abc', status: 409 })));
    const r = await act('x', 'deleting', () => store.get() && Promise.reject(new BerthError({ kind: 'conflict', message: 'in use' })), 'Could not delete x');
    expect(r).toBeUndefined();
    const t = store.get().toasts.at(-1)!;
    expect(t.kind).toBe('error');
    expect(t.title).toBe('Could not delete x');
    expect(t.message).toBe('in use');
    expect(store.get().busy.x).toBeUndefined();
  });

  it('toasts are capped', () => {
    for (let i = 0; i < 8; i++) toast({ kind: 'info', title: `t${i}` }, 0);
    expect(store.get().toasts.map((t) => t.title)).toEqual(['t3', 't4', 't5', 't6', 't7']);
  });

  it('the WebSocket address carries the token, kept for reloads', () => {
    const storage = new Map<string, string>();
    const st = { getItem: (k: string) => storage.get(k) ?? null, setItem: (k: string, v: string) => void storage.set(k, v) } as unknown as Storage;
    const u = wsUrlFromLocation({ search: '?token=abc', protocol: 'http:', host: '127.0.0.1:4000' } as Location, st);
    expect(u).toBe('ws://127.0.0.1:4000/api/ws?token=abc');
    expect(wsUrlFromLocation({ search: '', protocol: 'http:', host: '127.0.0.1:4000' } as Location, st)).toBe(u);
  });
});
