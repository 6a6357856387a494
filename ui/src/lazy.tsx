import { h, type ComponentType } from 'preact';
import { useEffect, useState } from 'preact/hooks';

/**
 * A view whose module is imported the first time it is shown, so the
 * containers list (the page the app opens on) does not parse, compile and keep
 * the code of the pages the user may never open (docs/BENCHMARKS.md, issue #6).
 * The import is from the app's own files, so it takes a few milliseconds; a
 * failure is shown in place of the view.
 */
export function lazyView<P extends object>(load: () => Promise<ComponentType<P>>): ComponentType<P> {
  let loaded: ComponentType<P> | null = null;
  let pending: Promise<ComponentType<P>> | null = null;
  function Lazy(props: P) {
    const [C, setC] = useState<ComponentType<P> | null>(() => loaded);
    const [error, setError] = useState<string | null>(null);
    useEffect(() => {
      if (C) return;
      let live = true;
      pending ??= load().then((c) => (loaded = c));
      pending.then(
        (c) => live && setC(() => c),
        (e: unknown) => {
          pending = null;
          if (live) setError(e instanceof Error ? e.message : String(e));
        },
      );
      return () => {
        live = false;
      };
    }, [C]);
    if (error)
      return (
        <div class="banner warn" role="alert">
          This view could not be loaded: {error}
        </div>
      );
    if (!C) return <div class="view-loading" aria-busy="true" />;
    return h(C as ComponentType<object>, props);
  }
  return Lazy;
}
