// Performance marks for bench/app: the host prints
// `BERTH_MARK <what> rows=N t_ms=<ms since the process started>` on stderr.
// One call per mark and page load, after the browser has painted: a first
// requestAnimationFrame runs before the next paint, a second one after it.
import { getTransport } from '../transport';

const marked = new Set<string>();

/** Reports `what` once per page load, after the current DOM is painted. */
export function markPainted(what: string, extra: Record<string, unknown> = {}): boolean {
  if (marked.has(what)) return false;
  marked.add(what);
  const raf = typeof requestAnimationFrame === 'function' ? requestAnimationFrame : (f: () => void) => setTimeout(f, 16);
  raf(() =>
    raf(() => {
      // Best effort: an older host without `app.mark` answers "unknown command".
      void getTransport()
        .call('app.mark', { what, ...extra })
        .catch(() => {});
    }),
  );
  return true;
}

/** Tests only: forget the marks already sent. */
export function resetMarks() {
  marked.clear();
}
