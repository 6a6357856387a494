import { useEffect, useState } from 'preact/hooks';
import { act, call, saveSettings, showError, toast, useStore } from '../store';
import { bytes, ibytes } from '../lib/format';
import { toBerthError } from '../transport';
import { ErrorBox, Icon, Spinner, StatePill } from '../components/ui';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Info = any;

export async function startEngine(restart = false) {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const r = await act<any>('engine', restart ? 'restarting' : 'starting', () => call(restart ? 'engine.restart' : 'engine.start'), restart ? 'The engine did not restart' : 'The engine did not start');
  if (r) toast({ kind: 'success', title: r.message ?? 'Engine started' });
}

function useEngineInfo() {
  const engine = useStore((s) => s.engine);
  const [info, setInfo] = useState<Info | null>(null);
  useEffect(() => {
    if (engine.state !== 'running') {
      setInfo(null);
      return;
    }
    call<Info>('system.info')
      .then(setInfo)
      .catch(() => setInfo(null));
  }, [engine.state]);
  return { engine, info };
}

function EngineCard() {
  const { engine, info } = useEngineInfo();
  const busy = useStore((s) => s.busy.engine);
  const i = info?.info;
  return (
    <section class="card" aria-labelledby="engine-h">
      <h3 id="engine-h">Engine</h3>
      <dl class="kv">
        <dt>State</dt>
        <dd>
          <StatePill state={engine.state === 'running' ? 'running' : engine.state === 'starting' ? 'restarting' : 'exited'} label={busy ?? engine.state} />
        </dd>
        <dt>Socket</dt>
        <dd class="mono">{engine.host || '—'}</dd>
        <dt>Mode</dt>
        <dd>native (Linux)</dd>
        <dt>Version</dt>
        <dd>{engine.version ? `${engine.version} · API ${engine.apiVersion}` : '—'}</dd>
        {i && (
          <>
            <dt>Host</dt>
            <dd>
              {i.OperatingSystem} · kernel {i.KernelVersion} · {i.NCPU} CPUs · {ibytes(i.MemTotal)}
            </dd>
            <dt>Data root</dt>
            <dd class="mono">{i.DockerRootDir}</dd>
            <dt>Runtime</dt>
            <dd>
              {i.DefaultRuntime} · storage {i.Driver} · cgroup {i.CgroupVersion}
            </dd>
            <dt>Registry mirrors</dt>
            <dd class="mono">{(i.RegistryConfig?.Mirrors ?? []).join(', ') || 'none'}</dd>
          </>
        )}
      </dl>
      {engine.error && <ErrorBox title="The engine is not reachable" message={engine.error.message} />}
      <div class="toolbar">
        {engine.state === 'running' ? (
          <button type="button" onClick={() => startEngine(true)} disabled={!!busy}>
            <Icon name="restart" /> Restart engine
          </button>
        ) : (
          <button type="button" class="primary" onClick={() => startEngine(false)} disabled={!!busy}>
            <Icon name="play" /> Start engine
          </button>
        )}
      </div>
      <p class="muted small">Registry mirrors are berthd flags (--registry-mirror); set them in the engine's service or scripts/up (BERTHD_ARGS).</p>
    </section>
  );
}

export function Settings() {
  const settings = useStore((s) => s.settings);
  const [host, setHost] = useState<string | null>(null);
  if (!settings) return <Spinner />;
  const h = host ?? settings.dockerHost;
  const toggle = (key: 'startEngine' | 'startAtLogin' | 'closeToTray' | 'confirmDeletes', label: string, note?: string) => (
    <label class="check">
      <input type="checkbox" checked={settings[key]} onChange={(e) => void saveSettings({ [key]: e.currentTarget.checked })} /> {label}
      {note && <span class="muted small"> — {note}</span>}
    </label>
  );
  return (
    <section class="view settings" aria-labelledby="settings-title">
      <header class="view-header">
        <h1 id="settings-title">Settings</h1>
      </header>
      <div class="cards">
        <EngineCard />
        <section class="card" aria-labelledby="general-h">
          <h3 id="general-h">General</h3>
          <fieldset class="theme">
            <legend>Theme</legend>
            {(['system', 'light', 'dark'] as const).map((t) => (
              <label class="check" key={t}>
                <input type="radio" name="theme" value={t} checked={settings.theme === t} onChange={() => void saveSettings({ theme: t })} /> {t[0].toUpperCase() + t.slice(1)}
              </label>
            ))}
          </fieldset>
          {toggle('startEngine', 'Start the engine when Berth starts')}
          {toggle('startAtLogin', 'Start Berth at login', 'in the tray, without a window')}
          {toggle('closeToTray', 'Keep running in the tray when the window is closed')}
          {toggle('confirmDeletes', 'Ask before deleting')}
        </section>
        <section class="card" aria-labelledby="conn-h">
          <h3 id="conn-h">Engine address</h3>
          <form
            class="form"
            onSubmit={async (e) => {
              e.preventDefault();
              if (await saveSettings({ dockerHost: h.trim() })) toast({ kind: 'success', title: 'Engine address saved' });
            }}
          >
            <label>
              Socket or address <span class="muted">(empty: DOCKER_HOST, else /run/berth/docker.sock)</span>
              <input type="text" class="mono" value={h} placeholder="unix:///run/berth/docker.sock" onInput={(e) => setHost(e.currentTarget.value)} />
            </label>
            <button type="submit">Save</button>
          </form>
        </section>
        <VmCard />
      </div>
    </section>
  );
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type VmStatus = any;

/** Settings → Virtual machine: state and resources of Berth's VM (shared with `berth vm`). */
export function VmCard() {
  const [vm, setVm] = useState<VmStatus | null>(null);
  const [form, setForm] = useState({ cpus: 2, memoryMib: 2048, diskGib: 64 });
  const load = () =>
    call<VmStatus>('vm.status')
      .then((v) => {
        setVm(v);
        if (v?.settings) setForm(v.settings);
      })
      .catch(() => setVm(null));
  useEffect(() => {
    void load();
  }, []);
  const save = async (e: Event) => {
    e.preventDefault();
    try {
      const v = await call<VmStatus>('vm.settings.set', { settings: form });
      setVm(v);
      toast({ kind: 'success', title: 'VM settings saved', message: 'They apply at the VM\'s next start.' });
    } catch (err) {
      showError('The VM settings were not saved', err);
    }
  };
  const num = (k: 'cpus' | 'memoryMib' | 'diskGib', label: string, min: number) => (
    <label>
      {label}
      <input type="number" min={min} value={form[k]} onInput={(e) => setForm({ ...form, [k]: Number(e.currentTarget.value) })} />
    </label>
  );
  return (
    <section class="card" aria-labelledby="vm-h">
      <h3 id="vm-h">Virtual machine</h3>
      {!vm?.exists ? (
        <p class="muted">
          On Linux Berth runs the engine natively. The VM (how Berth runs on macOS and Windows; <span class="mono">berth vm start</span> here) has not been
          created yet: its CPUs, memory and disk are set here once it exists.
        </p>
      ) : (
        <>
          <dl class="kv">
            <dt>State</dt>
            <dd>
              <StatePill state={vm.state === 'running' ? 'running' : vm.state === 'crashed' ? 'dead' : 'exited'} label={vm.state} />
            </dd>
            {vm.bootMs != null && (
              <>
                <dt>Boot</dt>
                <dd>{(vm.bootMs / 1000).toFixed(2)} s to engine ready</dd>
              </>
            )}
            <dt>Socket</dt>
            <dd class="mono">unix://{vm.socket}</dd>
            {vm.message && (
              <>
                <dt>Last error</dt>
                <dd>{vm.message}</dd>
              </>
            )}
          </dl>
          <form class="form vm-resources" onSubmit={save} aria-label="VM resources">
            {num('cpus', 'CPUs', 1)}
            {num('memoryMib', 'Memory (MiB)', 512)}
            {num('diskGib', 'Disk (GiB)', 4)}
            <button type="submit">Save</button>
          </form>
        </>
      )}
    </section>
  );
}

export function Troubleshoot() {
  const { engine } = useEngineInfo();
  const [log, setLog] = useState<{ path: string; text: string } | null>(null);
  const [logErr, setLogErr] = useState<string | null>(null);
  const [opts, setOpts] = useState({ containers: true, networks: true, images: true, allImages: false, volumes: false });
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const [result, setResult] = useState<any>(null);
  const [df, setDf] = useState<Info | null>(null);
  const readLog = () =>
    call<{ path: string; text: string }>('engine.log', { lines: 300 })
      .then((l) => {
        setLog(l);
        setLogErr(null);
      })
      .catch((e) => setLogErr(toBerthError(e).message));
  const readDf = () =>
    call<Info>('system.df')
      .then(setDf)
      .catch(() => setDf(null));
  useEffect(() => {
    void readLog();
    void readDf();
  }, [engine.state]);
  const clean = async () => {
    try {
      const r = await call('system.prune', opts);
      setResult(r);
      void readDf();
    } catch (e) {
      showError('Clean-up failed', e);
    }
  };
  const sum = (xs: { Size?: number }[] | undefined) => (xs ?? []).reduce((a, x) => a + (x.Size ?? 0), 0);
  return (
    <section class="view troubleshoot" aria-labelledby="ts-title">
      <header class="view-header">
        <h1 id="ts-title">Troubleshoot</h1>
      </header>
      <div class="cards">
        <EngineCard />
        <section class="card" aria-labelledby="clean-h">
          <h3 id="clean-h">Clean up</h3>
          {df && (
            <p class="muted small">
              Images {bytes(df.LayersSize ?? sum(df.Images))} · {(df.Containers ?? []).length} containers · {(df.Volumes ?? []).length} volumes
            </p>
          )}
          {(
            [
              ['containers', 'Stopped containers'],
              ['networks', 'Unused networks'],
              ['images', 'Dangling images'],
              ['allImages', 'All images no container uses'],
              ['volumes', 'Unused volumes (their data is lost)'],
            ] as const
          ).map(([k, label]) => (
            <label class="check" key={k}>
              <input type="checkbox" checked={opts[k]} onChange={(e) => setOpts({ ...opts, [k]: e.currentTarget.checked })} /> {label}
            </label>
          ))}
          <div class="toolbar">
            <button type="button" class="danger" onClick={clean}>
              <Icon name="trash" /> Clean up
            </button>
          </div>
          {result && (
            <p role="status">
              Removed {(result.containers ?? []).length} containers, {(result.images ?? []).length} images, {(result.networks ?? []).length} networks
              {result.volumes ? `, ${result.volumes.length} volumes` : ''}; reclaimed {bytes(result.spaceReclaimed ?? 0)}.
            </p>
          )}
        </section>
      </div>
      <section class="card" aria-labelledby="log-h">
        <h3 id="log-h">
          Engine log <span class="muted small mono">{log?.path}</span>
        </h3>
        <div class="toolbar">
          <button type="button" onClick={() => void readLog()}>
            <Icon name="restart" /> Reload
          </button>
        </div>
        {logErr && <ErrorBox title="The engine log cannot be read" message={logErr} />}
        {log && (
          <pre class="engine-log mono" tabIndex={0} aria-label="Engine log">
            {log.text || '(empty)'}
          </pre>
        )}
      </section>
    </section>
  );
}
