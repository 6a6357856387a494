// Which lists an engine event invalidates (tests/events.test.ts).

export type ListName = 'containers' | 'images' | 'volumes' | 'networks';

export interface EngineEvent {
  Type?: string;
  Action?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
  time?: number;
}

const CONTAINER_NOISE = /^(exec_create|exec_start|exec_die|top|resize|attach|detach|export|archive-path|extract-to-dir|health_status.*)/;

export function affected(ev: EngineEvent): ListName[] {
  const action = ev.Action ?? '';
  switch (ev.Type) {
    case 'container':
      if (CONTAINER_NOISE.test(action)) return [];
      // Images, volumes and networks show which containers use them.
      if (action === 'create' || action === 'destroy' || action === 'rename') return ['containers', 'images', 'volumes', 'networks'];
      if (action === 'start' || action === 'die') return ['containers', 'networks'];
      return ['containers'];
    case 'image':
      return ['images'];
    case 'volume':
      return action === 'mount' || action === 'unmount' ? [] : ['volumes'];
    case 'network':
      return action === 'connect' || action === 'disconnect' ? ['networks', 'containers'] : ['networks'];
    default:
      return [];
  }
}

/** Calls `fn` once after a burst of triggers (no timer runs when nothing happens). */
export function debounce<T extends unknown[]>(fn: (...a: T) => void, ms: number): (...a: T) => void {
  let t: ReturnType<typeof setTimeout> | null = null;
  return (...a: T) => {
    if (t) clearTimeout(t);
    t = setTimeout(() => {
      t = null;
      fn(...a);
    }, ms);
  };
}
