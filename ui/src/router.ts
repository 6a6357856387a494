// Hash routes: #/containers, #/containers/ID/logs, #/images, ...
import { useEffect, useState } from 'preact/hooks';

export interface Route {
  view: 'containers' | 'container' | 'images' | 'volumes' | 'networks' | 'settings' | 'troubleshoot';
  id?: string;
  tab?: string;
}

export function parse(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  switch (parts[0]) {
    case 'containers':
      return parts[1] ? { view: 'container', id: parts[1], tab: parts[2] ?? 'logs' } : { view: 'containers' };
    case 'images':
    case 'volumes':
    case 'networks':
    case 'settings':
    case 'troubleshoot':
      return { view: parts[0] };
    default:
      return { view: 'containers' };
  }
}

export function navigate(hash: string) {
  if (location.hash !== hash) location.hash = hash;
}

export function useRoute(): Route {
  const [r, setR] = useState(() => parse(location.hash));
  useEffect(() => {
    const on = () => setR(parse(location.hash));
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return r;
}
