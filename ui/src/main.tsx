import { render } from 'preact';
import { useEffect } from 'preact/hooks';
import './styles.css';
import { loadSettings, reloadLoaded, showError, store, subscribeEvents, useStore } from './store';
import { transport, toBerthError } from './transport';
import { navigate, useRoute } from './router';
import { ConfirmHost, Icon, StatePill, Toasts } from './components/ui';
import { Containers } from './views/Containers';
import { lazyView } from './lazy';
import { Settings, Troubleshoot, startEngine } from './views/Settings';

// Loaded when first shown: the app opens on the containers list.
const ContainerPage = lazyView(() => import('./views/ContainerPage').then((m) => m.ContainerPage));
const Images = lazyView(() => import('./views/Images').then((m) => m.Images));
const Volumes = lazyView(() => import('./views/Volumes').then((m) => m.Volumes));
const Networks = lazyView(() => import('./views/Networks').then((m) => m.Networks));

const NAV = [
  { view: 'containers', label: 'Containers', icon: 'box', hash: '#/containers', key: '1' },
  { view: 'images', label: 'Images', icon: 'layers', hash: '#/images', key: '2' },
  { view: 'volumes', label: 'Volumes', icon: 'disk', hash: '#/volumes', key: '3' },
  { view: 'networks', label: 'Networks', icon: 'net', hash: '#/networks', key: '4' },
];
const NAV2 = [
  { view: 'settings', label: 'Settings', icon: 'gear', hash: '#/settings', key: '5' },
  { view: 'troubleshoot', label: 'Troubleshoot', icon: 'lifebuoy', hash: '#/troubleshoot', key: '6' },
];

function EngineBanner() {
  const engine = useStore((s) => s.engine);
  const busy = useStore((s) => s.busy.engine);
  if (engine.state === 'running' || engine.state === 'unknown') return null;
  if (engine.state === 'starting')
    return (
      <div class="banner info" role="status">
        <span class="spinner" aria-hidden="true" /> The engine is starting…
      </div>
    );
  return (
    <div class="banner warn" role="alert">
      <div>
        <strong>The engine is not running.</strong> {engine.error?.message ? `${engine.error.message[0].toUpperCase()}${engine.error.message.slice(1)}.` : ''} Berth reconnects as soon as it is back.
      </div>
      <button type="button" class="primary" disabled={!!busy} onClick={() => void startEngine(false)}>
        <Icon name="play" /> {busy ? 'Starting…' : 'Start engine'}
      </button>
    </div>
  );
}

function Sidebar({ current }: { current: string }) {
  const engine = useStore((s) => s.engine);
  const running = useStore((s) => (s.containers.items ?? []).filter((c) => c.State === 'running').length);
  const link = (n: (typeof NAV)[number]) => (
    <li key={n.view}>
      <a href={n.hash} class={current === n.view || (n.view === 'containers' && current === 'container') ? 'active' : ''} aria-current={current === n.view ? 'page' : undefined} title={`${n.label} (Alt+${n.key})`}>
        <Icon name={n.icon} size={18} /> <span>{n.label}</span>
        {n.view === 'containers' && running > 0 && <span class="count">{running}</span>}
      </a>
    </li>
  );
  return (
    <nav class="sidebar" aria-label="Main">
      <div class="brand">
        <img src="/berth.svg" alt="" width={28} height={28} /> <span>Berth</span>
      </div>
      <ul>{NAV.map(link)}</ul>
      <ul class="bottom">{NAV2.map(link)}</ul>
      <a class="engine-status" href="#/troubleshoot" title={engine.error?.message ?? engine.host}>
        <StatePill state={engine.state === 'running' ? 'running' : engine.state === 'starting' ? 'restarting' : engine.state === 'unknown' ? 'created' : 'exited'} label={`Engine ${engine.state === 'unknown' ? 'connecting' : engine.state}`} />
      </a>
    </nav>
  );
}

function App() {
  const route = useRoute();
  const down = useStore((s) => s.engine.state === 'stopped');
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const t = e.target as HTMLElement;
      const typing = t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.closest('.term'));
      if (e.altKey && !e.ctrlKey && !e.metaKey) {
        const n = [...NAV, ...NAV2].find((x) => x.key === e.key);
        if (n) {
          e.preventDefault();
          navigate(n.hash);
        }
      } else if (e.key === '/' && !typing) {
        const s = document.querySelector<HTMLInputElement>('main input[type="search"]');
        if (s) {
          e.preventDefault();
          s.focus();
        }
      }
    };
    document.addEventListener('keydown', onKey);
    return () => document.removeEventListener('keydown', onKey);
  }, []);
  let view;
  switch (route.view) {
    case 'container':
      view = <ContainerPage id={route.id!} tab={route.tab ?? 'logs'} key={route.id} />;
      break;
    case 'images':
      view = <Images />;
      break;
    case 'volumes':
      view = <Volumes />;
      break;
    case 'networks':
      view = <Networks />;
      break;
    case 'settings':
      view = <Settings />;
      break;
    case 'troubleshoot':
      view = <Troubleshoot />;
      break;
    default:
      view = <Containers />;
  }
  return (
    <div class="app">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <Sidebar current={route.view} />
      <main id="main" tabIndex={-1} class={down ? 'engine-down' : ''}>
        <EngineBanner />
        {view}
      </main>
      <Toasts />
      <ConfirmHost />
    </div>
  );
}

async function start() {
  const root = document.getElementById('app')!;
  try {
    const t = await transport();
    t.onAppEvent((name, payload) => {
      if (name === 'navigate' && typeof payload === 'string') navigate(payload);
      if (name === 'error') {
        const p = payload as { title: string; error: unknown };
        showError(p.title, p.error);
      }
    });
    t.onReconnect(() => {
      void subscribeEvents();
      reloadLoaded();
    });
    render(<App />, root);
    await Promise.all([subscribeEvents(), loadSettings()]);
  } catch (e) {
    store.set({ engine: { state: 'stopped', host: '', error: { kind: 'io', message: toBerthError(e).message } } });
    render(<App />, root);
  }
}

void start();
