import { describe, expect, it, vi } from 'vitest';
import { affected, debounce } from '../src/lib/events';

describe('events', () => {
  it('maps engine events to the lists to reload', () => {
    expect(affected({ Type: 'container', Action: 'start' })).toEqual(['containers', 'networks']);
    expect(affected({ Type: 'container', Action: 'destroy' })).toContain('images');
    expect(affected({ Type: 'container', Action: 'exec_start: sh' })).toEqual([]);
    expect(affected({ Type: 'container', Action: 'pause' })).toEqual(['containers']);
    expect(affected({ Type: 'image', Action: 'pull' })).toEqual(['images']);
    expect(affected({ Type: 'volume', Action: 'mount' })).toEqual([]);
    expect(affected({ Type: 'network', Action: 'connect' })).toEqual(['networks', 'containers']);
    expect(affected({ Type: 'daemon', Action: 'reload' })).toEqual([]);
  });
  it('debounces a burst into one call', () => {
    vi.useFakeTimers();
    const fn = vi.fn();
    const d = debounce(fn, 100);
    d(1);
    d(2);
    d(3);
    vi.advanceTimersByTime(99);
    expect(fn).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(fn).toHaveBeenCalledTimes(1);
    expect(fn).toHaveBeenCalledWith(3);
    vi.useRealTimers();
  });
});
