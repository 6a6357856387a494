import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { render } from 'preact';
import { act } from 'preact/test-utils';
import { initialState, store } from '../src/store';
import { setTransport, type Transport } from '../src/transport';
import { markPainted, resetMarks } from '../src/lib/marks';
import { Containers } from '../src/views/Containers';
import type { ContainerSummary } from '../src/types';

type Call = { cmd: string; args: Record<string, unknown> };

function fakeTransport(calls: Call[], list: ContainerSummary[]): Transport {
  return {
    kind: 'web',
    async call<T>(cmd: string, args: Record<string, unknown> = {}) {
      calls.push({ cmd, args });
      return (cmd === 'containers.list' ? list : {}) as T;
    },
    async open() {
      return { id: 1, close() {} };
    },
    openUrl() {},
    onAppEvent() {},
    onReconnect() {},
  };
}

const ctr = (id: string, name: string): ContainerSummary => ({ Id: id.padEnd(64, '0'), Names: [`/${name}`], Image: 'busybox', Created: 0, State: 'running', Status: 'Up 1 minute' });

/** Lets two animation frames (and the promises between them) run. */
async function frames() {
  for (let i = 0; i < 4; i++) await new Promise((r) => setTimeout(r, 20));
}

describe('first-paint mark', () => {
  beforeEach(() => {
    store.set(initialState());
    resetMarks();
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('the containers view reports its first painted list once, with the row count', async () => {
    const calls: Call[] = [];
    setTransport(fakeTransport(calls, [ctr('a', 'web'), ctr('b', 'db'), ctr('c', 'cache')]));
    const root = document.createElement('div');
    document.body.appendChild(root);
    await act(async () => {
      render(<Containers />, root);
    });
    await frames();
    expect(root.querySelectorAll('tr[data-name]').length).toBe(3);
    const marks = calls.filter((c) => c.cmd === 'app.mark');
    expect(marks).toEqual([{ cmd: 'app.mark', args: { what: 'containers-painted', rows: 3 } }]);
    // A reload (an engine event) does not mark again.
    await act(async () => {
      store.set({ containers: { items: [ctr('a', 'web')], loading: false } });
    });
    await frames();
    expect(calls.filter((c) => c.cmd === 'app.mark').length).toBe(1);
    render(null, root);
    root.remove();
  });

  it('is not sent before the list arrived, and waits for two frames', async () => {
    const calls: Call[] = [];
    setTransport(fakeTransport(calls, []));
    const rafs: FrameRequestCallback[] = [];
    vi.spyOn(globalThis, 'requestAnimationFrame').mockImplementation((f) => rafs.push(f));
    expect(markPainted('x', { rows: 0 })).toBe(true);
    expect(markPainted('x', { rows: 0 })).toBe(false);
    expect(rafs.length).toBe(1);
    rafs.shift()!(0);
    await Promise.resolve();
    expect(calls).toEqual([]);
    expect(rafs.length).toBe(1);
    rafs.shift()!(0);
    await Promise.resolve();
    expect(calls).toEqual([{ cmd: 'app.mark', args: { what: 'x', rows: 0 } }]);
  });

  it('a host without app.mark is harmless', async () => {
    const t = fakeTransport([], []);
    t.call = () => Promise.reject(new Error('unknown command "app.mark"'));
    setTransport(t);
    markPainted('y');
    await frames();
  });
});
