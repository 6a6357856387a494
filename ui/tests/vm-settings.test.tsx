import { beforeEach, describe, expect, it } from 'vitest';
import { render } from 'preact';
import { act } from 'preact/test-utils';
import { initialState, store } from '../src/store';
import { setTransport, type Transport } from '../src/transport';
import { VmCard } from '../src/views/Settings';

type Call = { cmd: string; args: Record<string, unknown> };

function transport(calls: Call[], status: Record<string, unknown>): Transport {
  return {
    kind: 'web',
    async call<T>(cmd: string, args: Record<string, unknown> = {}) {
      calls.push({ cmd, args });
      if (cmd === 'vm.settings.set') return { ...status, settings: (args as { settings: unknown }).settings } as T;
      return status as T;
    },
    async open() {
      return { id: 1, close() {} };
    },
    openUrl() {},
    onAppEvent() {},
    onReconnect() {},
  };
}

const tick = () => new Promise<void>((r) => setTimeout(r, 20));

describe('Settings → Virtual machine', () => {
  beforeEach(() => store.set(initialState()));

  it('says there is no VM yet, without resource fields', async () => {
    const calls: Call[] = [];
    setTransport(transport(calls, { exists: false, state: 'stopped' }));
    const root = document.createElement('div');
    await act(async () => render(<VmCard />, root));
    await act(tick);
    expect(calls.map((c) => c.cmd)).toEqual(['vm.status']);
    expect(root.textContent).toContain('has not been created yet');
    expect(root.querySelector('input[type=number]')).toBeNull();
  });

  it('shows the state and saves CPUs, memory and disk', async () => {
    const calls: Call[] = [];
    setTransport(transport(calls, { exists: true, state: 'running', bootMs: 5280, socket: '/home/u/.berth/run/docker.sock', settings: { cpus: 2, memoryMib: 2048, diskGib: 64 } }));
    const root = document.createElement('div');
    await act(async () => render(<VmCard />, root));
    await act(tick);
    expect(root.textContent).toContain('running');
    expect(root.textContent).toContain('5.28 s to engine ready');
    const inputs = root.querySelectorAll<HTMLInputElement>('input[type=number]');
    expect([...inputs].map((i) => i.value)).toEqual(['2', '2048', '64']);
    await act(async () => {
      inputs[1].value = '4096';
      inputs[1].dispatchEvent(new Event('input', { bubbles: true }));
    });
    await act(async () => {
      root.querySelector('form')!.dispatchEvent(new Event('submit', { bubbles: true, cancelable: true }));
      await tick();
    });
    expect(calls.at(-1)).toEqual({ cmd: 'vm.settings.set', args: { settings: { cpus: 2, memoryMib: 4096, diskGib: 64 } } });
  });
});
