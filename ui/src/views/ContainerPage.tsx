import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { call, showError, useStore } from '../store';
import { isRunning, name as cname, ports } from '../lib/containers';
import { LogBuffer, highlight, matches, pattern } from '../lib/logs';
import { History, type Sample } from '../lib/stats';
import { date, ibytes, percent, rate, shortId } from '../lib/format';
import { getTransport, toBerthError, type StreamHandle } from '../transport';
import { Chart, ErrorBox, Icon, IconButton, Spinner, StatePill, Tabs } from '../components/ui';
import { containerAction } from './Containers';
import { navigate } from '../router';
import type { ContainerSummary } from '../types';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Inspect = any;

const TABS = [
  { id: 'logs', label: 'Logs' },
  { id: 'inspect', label: 'Inspect' },
  { id: 'terminal', label: 'Terminal' },
  { id: 'stats', label: 'Stats' },
];

export function ContainerPage({ id, tab }: { id: string; tab: string }) {
  const epoch = useStore((s) => s.containerEpoch);
  const busy = useStore((s) => s.busy[id]);
  const [info, setInfo] = useState<Inspect | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let live = true;
    call<Inspect>('container.inspect', { id })
      .then((v) => {
        if (!live) return;
        setInfo(v);
        setError(null);
      })
      .catch((e) => live && setError(toBerthError(e).message));
    return () => {
      live = false;
    };
  }, [id, epoch]);

  if (error && !info) {
    return (
      <section class="view">
        <a href="#/containers" class="back">
          ← Containers
        </a>
        <ErrorBox title="This container cannot be shown" message={error} />
      </section>
    );
  }
  if (!info) return <Spinner />;
  const state: string = info.State?.Paused ? 'paused' : info.State?.Status ?? 'unknown';
  const summary: ContainerSummary = { Id: info.Id, Names: [info.Name], Image: info.Config?.Image, Created: 0, State: state, Status: '' };
  const running = state === 'running' || state === 'restarting';
  const name = cname(summary);
  return (
    <section class="view container-page" aria-labelledby="container-title">
      <a href="#/containers" class="back">
        ← Containers
      </a>
      <header class="view-header">
        <div>
          <h1 id="container-title">
            {name} <StatePill state={state} label={busy ?? state} />
          </h1>
          <div class="sub">
            <span class="mono">{shortId(info.Id)}</span> · {info.Config?.Image} {error && <span class="warn">· {error}</span>}
          </div>
        </div>
        <div class="toolbar">
          {running || state === 'paused' ? (
            <button type="button" onClick={() => containerAction(summary, 'stop')} disabled={!!busy}>
              <Icon name="stop" /> Stop
            </button>
          ) : (
            <button type="button" class="primary" onClick={() => containerAction(summary, 'start')} disabled={!!busy}>
              <Icon name="play" /> Start
            </button>
          )}
          {state === 'paused' ? (
            <button type="button" onClick={() => containerAction(summary, 'unpause')}>
              <Icon name="play" /> Resume
            </button>
          ) : (
            <button type="button" onClick={() => containerAction(summary, 'pause')} disabled={!running}>
              <Icon name="pause" /> Pause
            </button>
          )}
          <button type="button" onClick={() => containerAction(summary, 'restart')} disabled={!!busy}>
            <Icon name="restart" /> Restart
          </button>
          <button
            type="button"
            class="danger"
            onClick={async () => {
              if (await containerAction(summary, 'remove')) navigate('#/containers');
            }}
          >
            <Icon name="trash" /> Delete
          </button>
        </div>
      </header>
      <Tabs tabs={TABS} current={tab} onSelect={(t) => navigate(`#/containers/${id}/${t}`)} />
      <div class="tab-panel" role="tabpanel" aria-labelledby={`tab-${tab}`}>
        {tab === 'logs' && <Logs id={id} name={name} tty={!!info.Config?.Tty} key={`${id}`} />}
        {tab === 'inspect' && <InspectView info={info} />}
        {tab === 'terminal' && <Terminal id={id} running={running} />}
        {tab === 'stats' && <Stats id={id} running={running} />}
      </div>
    </section>
  );
}

// ---- logs ------------------------------------------------------------------------

const RENDER_MAX = 3000;

function Logs({ id, name }: { id: string; name: string; tty: boolean }) {
  const [follow, setFollow] = useState(true);
  const [timestamps, setTimestamps] = useState(false);
  const [query, setQuery] = useState('');
  const [regex, setRegex] = useState(false);
  const [cur, setCur] = useState(0);
  const [, setTick] = useState(0);
  const [status, setStatus] = useState<string>('connecting');
  const buf = useRef(new LogBuffer(20000, false));
  const box = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const epoch = useStore((s) => s.containerEpoch);

  useEffect(() => {
    buf.current = new LogBuffer(20000, timestamps);
    setTick((t) => t + 1);
    let h: StreamHandle | null = null;
    let closed = false;
    let pending = false;
    const redraw = () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        setTick((t) => t + 1);
      });
    };
    setStatus('connecting');
    getTransport()
      .open('logs', { id, follow, timestamps, tail: '2000' }, (m) => {
        if (m.type === 'data') {
          buf.current.push(m.data);
          redraw();
        } else if (m.type === 'end') {
          buf.current.flush();
          setStatus(follow ? 'ended' : 'done');
          redraw();
        } else if (m.type === 'error') {
          setStatus('error: ' + m.error.message);
        }
      })
      .then((handle) => {
        h = handle;
        if (closed) handle.close();
        else setStatus(follow ? 'following' : 'done');
      })
      .catch((e) => setStatus('error: ' + toBerthError(e).message));
    return () => {
      closed = true;
      h?.close();
    };
    // Re-attach when the container restarts (a followed stream ends with it).
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [id, follow, timestamps, status === 'ended' ? epoch : 0]);

  const re = useMemo(() => pattern(query, regex), [query, regex]);
  const lines = buf.current.lines;
  const hits = useMemo(() => matches(lines, re), [lines.length, lines[lines.length - 1]?.n, re]);
  const shown = lines.slice(-RENDER_MAX);

  useEffect(() => {
    const el = box.current;
    if (el && follow && atBottom.current && !query) el.scrollTop = el.scrollHeight;
  });
  const goto = (i: number) => {
    if (!hits.length) return;
    const j = ((i % hits.length) + hits.length) % hits.length;
    setCur(j);
    box.current?.querySelector(`[data-n="${hits[j]}"]`)?.scrollIntoView({ block: 'center' });
  };
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(buf.current.text());
    } catch (e) {
      showError('Could not copy the logs', e);
    }
  };
  const download = () => {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([buf.current.text()], { type: 'text/plain' }));
    a.download = `${name}.log`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  };
  const invalid = query && regex && !re;
  return (
    <div class="logs">
      <div class="toolbar logs-toolbar">
        <label class="search">
          <Icon name="search" />
          <input
            type="search"
            aria-label="Search the logs"
            placeholder={regex ? 'Regular expression' : 'Search'}
            value={query}
            aria-invalid={invalid ? 'true' : undefined}
            onInput={(e) => {
              setQuery(e.currentTarget.value);
              setCur(0);
            }}
            onKeyDown={(e) => {
              if (e.key === 'Enter') goto(e.shiftKey ? cur - 1 : cur + 1);
            }}
          />
        </label>
        <span class="match-count" aria-live="polite">
          {query ? (invalid ? 'invalid pattern' : hits.length ? `${cur + 1}/${hits.length}` : 'no matches') : ''}
        </span>
        <IconButton icon="up" label="Previous match" disabled={!hits.length} onClick={() => goto(cur - 1)} />
        <IconButton icon="down" label="Next match" disabled={!hits.length} onClick={() => goto(cur + 1)} />
        <label class="check">
          <input type="checkbox" checked={regex} onChange={(e) => setRegex(e.currentTarget.checked)} /> Regex
        </label>
        <label class="check">
          <input type="checkbox" checked={follow} onChange={(e) => setFollow(e.currentTarget.checked)} /> Follow
        </label>
        <label class="check">
          <input type="checkbox" checked={timestamps} onChange={(e) => setTimestamps(e.currentTarget.checked)} /> Timestamps
        </label>
        <IconButton icon="copy" label="Copy the logs" onClick={copy} />
        <IconButton icon="download" label="Download the logs" onClick={download} />
        <IconButton
          icon="trash"
          label="Clear the view"
          onClick={() => {
            buf.current.clear();
            setTick((t) => t + 1);
          }}
        />
      </div>
      <div
        class="log-lines mono"
        ref={box}
        tabIndex={0}
        aria-label="Log output"
        role="log"
        onScroll={(e) => {
          const el = e.currentTarget;
          atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
        }}
      >
        {lines.length > RENDER_MAX && <div class="muted">… {lines.length - RENDER_MAX} earlier lines (download to see all)</div>}
        {shown.map((l) => (
          <div key={l.n} data-n={l.n} class={`log-line ${l.stream}${hits[cur] === l.n ? ' current' : ''}`}>
            {l.time && <span class="ts">{l.time.replace('T', ' ').replace(/\.\d+/, '').replace('Z', '')}</span>}
            {highlight(l.text, re).map((s, i) => (s.hit ? <mark key={i}>{s.text}</mark> : s.text))}
          </div>
        ))}
        {lines.length === 0 && <div class="muted">{status.startsWith('error') ? '' : 'No output yet.'}</div>}
      </div>
      <div class={`log-status${status.startsWith('error') ? ' warn' : ''}`} aria-live="polite">
        {lines.length} lines · {status}
      </div>
    </div>
  );
}

// ---- inspect ------------------------------------------------------------------------

function Section({ title, children }: { title: string; children: preact.ComponentChildren }) {
  return (
    <section class="card">
      <h3>{title}</h3>
      {children}
    </section>
  );
}

function KV({ rows }: { rows: [string, preact.ComponentChildren][] }) {
  return (
    <dl class="kv">
      {rows.map(([k, v]) => (
        <>
          <dt key={k + 'k'}>{k}</dt>
          <dd key={k + 'v'}>{v === '' || v == null ? '—' : v}</dd>
        </>
      ))}
    </dl>
  );
}

function InspectView({ info }: { info: Inspect }) {
  const [raw, setRaw] = useState(false);
  const c = info.Config ?? {};
  const hc = info.HostConfig ?? {};
  const portList = Object.entries((info.NetworkSettings?.Ports ?? {}) as Record<string, { HostIp: string; HostPort: string }[] | null>).flatMap(([k, bs]) => {
    const [priv, type] = k.split('/');
    return bs && bs.length ? bs.map((b) => ({ PrivatePort: +priv, PublicPort: +b.HostPort, IP: b.HostIp, Type: type })) : [{ PrivatePort: +priv, Type: type }];
  });
  const nets = Object.entries((info.NetworkSettings?.Networks ?? {}) as Record<string, { IPAddress?: string; Gateway?: string; MacAddress?: string; Aliases?: string[] }>);
  return (
    <div class="inspect">
      <div class="toolbar">
        <label class="check">
          <input type="checkbox" checked={raw} onChange={(e) => setRaw(e.currentTarget.checked)} /> Raw JSON
        </label>
        <IconButton icon="copy" label="Copy the JSON" onClick={() => void navigator.clipboard?.writeText(JSON.stringify(info, null, 2))} />
      </div>
      {raw ? (
        <pre class="json mono" tabIndex={0} aria-label="Inspect JSON">
          {JSON.stringify(info, null, 2)}
        </pre>
      ) : (
        <div class="cards">
          <Section title="Overview">
            <KV
              rows={[
                ['ID', <span class="mono">{info.Id}</span>],
                ['Image', c.Image],
                ['Command', [...(c.Entrypoint ?? []), ...(c.Cmd ?? [])].join(' ')],
                ['Working dir', c.WorkingDir],
                ['User', c.User],
                ['Created', date(info.Created)],
                ['Started', date(info.State?.StartedAt)],
                ['Finished', info.State?.Running ? '' : date(info.State?.FinishedAt)],
                ['Exit code', info.State?.Running ? '' : String(info.State?.ExitCode ?? '')],
                ['Restart policy', hc.RestartPolicy?.Name ? `${hc.RestartPolicy.Name}${hc.RestartPolicy.MaximumRetryCount ? `:${hc.RestartPolicy.MaximumRetryCount}` : ''}` : 'no'],
                ['PID', info.State?.Pid ? String(info.State.Pid) : ''],
                ['TTY', c.Tty ? 'yes' : 'no'],
              ]}
            />
          </Section>
          <Section title="Ports">
            {portList.length ? (
              <ul class="plain">
                {ports(portList).map((p) => (
                  <li key={p.key}>
                    {p.url ? (
                      <a
                        href={p.url}
                        onClick={(e) => {
                          e.preventDefault();
                          getTransport().openUrl(p.url!);
                        }}
                      >
                        {p.label} → {p.url}
                      </a>
                    ) : (
                      p.label
                    )}
                  </li>
                ))}
              </ul>
            ) : (
              <p class="muted">No ports.</p>
            )}
          </Section>
          <Section title="Mounts">
            {info.Mounts?.length ? (
              <table class="mini">
                <thead>
                  <tr>
                    <th>Type</th>
                    <th>Source</th>
                    <th>Destination</th>
                    <th>Mode</th>
                  </tr>
                </thead>
                <tbody>
                  {info.Mounts.map((m: Inspect) => (
                    <tr key={m.Destination}>
                      <td>{m.Type}</td>
                      <td class="mono">{m.Name ?? m.Source}</td>
                      <td class="mono">{m.Destination}</td>
                      <td>{m.RW ? 'rw' : 'ro'}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            ) : (
              <p class="muted">No mounts.</p>
            )}
          </Section>
          <Section title="Environment">
            {c.Env?.length ? (
              <table class="mini env">
                <tbody>
                  {c.Env.map((e: string) => {
                    const i = e.indexOf('=');
                    return (
                      <tr key={e}>
                        <td class="mono">{i < 0 ? e : e.slice(0, i)}</td>
                        <td class="mono">{i < 0 ? '' : e.slice(i + 1)}</td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            ) : (
              <p class="muted">No variables.</p>
            )}
          </Section>
          <Section title="Networks">
            {nets.length ? (
              <table class="mini">
                <thead>
                  <tr>
                    <th>Network</th>
                    <th>IP address</th>
                    <th>Gateway</th>
                    <th>Aliases</th>
                  </tr>
                </thead>
                <tbody>
                  {nets.map(([n, v]) => (
                    <tr key={n}>
                      <td>{n}</td>
                      <td class="mono">{v.IPAddress || '—'}</td>
                      <td class="mono">{v.Gateway || '—'}</td>
                      <td>{(v.Aliases ?? []).join(', ')}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            ) : (
              <p class="muted">{hc.NetworkMode ?? 'No networks.'}</p>
            )}
          </Section>
          <Section title="Labels">
            {Object.keys(c.Labels ?? {}).length ? (
              <KV rows={Object.entries(c.Labels as Record<string, string>).map(([k, v]) => [k, v])} />
            ) : (
              <p class="muted">No labels.</p>
            )}
          </Section>
        </div>
      )}
    </div>
  );
}

// ---- terminal ------------------------------------------------------------------------

function b64ToBytes(b64: string): Uint8Array {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function Terminal({ id, running }: { id: string; running: boolean }) {
  const el = useRef<HTMLDivElement>(null);
  const [cmd, setCmd] = useState('sh');
  const [session, setSession] = useState(0);
  const [status, setStatus] = useState('');

  useEffect(() => {
    if (!running || session === 0 || !el.current) return;
    let disposed = false;
    let h: StreamHandle | null = null;
    let cleanup = () => {};
    (async () => {
      const [{ Terminal: XTerm }, { FitAddon }] = await Promise.all([import('@xterm/xterm'), import('@xterm/addon-fit')]);
      await import('@xterm/xterm/css/xterm.css');
      if (disposed || !el.current) return;
      const dark = getComputedStyle(document.documentElement).getPropertyValue('--term-bg').trim() || '#111';
      const term = new XTerm({ convertEol: false, cursorBlink: true, fontSize: 13, fontFamily: 'ui-monospace, "DejaVu Sans Mono", monospace', theme: { background: dark } });
      const fit = new FitAddon();
      term.loadAddon(fit);
      term.open(el.current);
      fit.fit();
      setStatus('connecting…');
      try {
        h = await getTransport().open('exec', { id, cmd, tty: true, cols: term.cols, rows: term.rows }, (m) => {
          if (m.type === 'data') term.write(b64ToBytes(m.data));
          else if (m.type === 'end') setStatus(`session ended${m.exitCode != null ? ` (exit code ${m.exitCode})` : ''}`);
          else if (m.type === 'error') setStatus('error: ' + m.error.message);
        });
      } catch (e) {
        setStatus('error: ' + toBerthError(e).message);
        term.dispose();
        return;
      }
      if (disposed) {
        h.close();
        term.dispose();
        return;
      }
      setStatus(`connected: ${cmd}`);
      const handle = h;
      const t = getTransport();
      // Keystrokes in order: one input call at a time, the rest batched behind it.
      let queued = '';
      let sending = false;
      const flush = async () => {
        if (sending || !queued) return;
        sending = true;
        const data = queued;
        queued = '';
        await t.call('stream.input', { id: handle.id, data }).catch(() => {});
        sending = false;
        void flush();
      };
      const d1 = term.onData((data) => {
        queued += data;
        void flush();
      });
      const d2 = term.onResize(({ cols, rows }) => void t.call('stream.resize', { id: handle.id, cols, rows }).catch(() => {}));
      const ro = new ResizeObserver(() => fit.fit());
      ro.observe(el.current!);
      term.focus();
      cleanup = () => {
        ro.disconnect();
        d1.dispose();
        d2.dispose();
        term.dispose();
      };
    })();
    return () => {
      disposed = true;
      h?.close();
      cleanup();
    };
  }, [id, session, running]);

  if (!running) return <p class="muted">Start the container to open a terminal in it.</p>;
  return (
    <div class="terminal">
      <form
        class="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          setSession((s) => s + 1);
        }}
      >
        <label>
          Command{' '}
          <input type="text" aria-label="Command to run" value={cmd} onInput={(e) => setCmd(e.currentTarget.value)} class="mono" />
        </label>
        <button type="submit" class="primary">
          <Icon name="terminal" /> {session ? 'New session' : 'Connect'}
        </button>
        <span class="muted" aria-live="polite">
          {status}
        </span>
      </form>
      <div class="term" ref={el} aria-label="Terminal" />
    </div>
  );
}

// ---- stats ----------------------------------------------------------------------------

function Stats({ id, running }: { id: string; running: boolean }) {
  const hist = useRef(new History(300));
  const [, setTick] = useState(0);
  const [err, setErr] = useState<string | null>(null);
  const [top, setTop] = useState<{ Titles: string[]; Processes: string[][] } | null>(null);
  useEffect(() => {
    if (!running) return;
    let h: StreamHandle | null = null;
    let closed = false;
    getTransport()
      .open('stats', { id }, (m) => {
        if (m.type === 'data') {
          hist.current.add(m.data as Sample);
          setTick((t) => t + 1);
        } else if (m.type === 'error') setErr(m.error.message);
      })
      .then((handle) => {
        h = handle;
        if (closed) handle.close();
      })
      .catch((e) => setErr(toBerthError(e).message));
    call<{ Titles: string[]; Processes: string[][] }>('container.top', { id })
      .then(setTop)
      .catch(() => setTop(null));
    return () => {
      closed = true;
      h?.close();
    };
  }, [id, running]);
  if (!running) return <p class="muted">The container is not running: no stats.</p>;
  const H = hist.current;
  const last = H.points[H.points.length - 1];
  return (
    <div class="stats">
      {err && <ErrorBox title="Stats stopped" message={err} />}
      {!last && <Spinner label="Waiting for the first sample" />}
      <div class="charts">
        <Chart title="CPU" series={[{ label: 'CPU', values: H.series('cpu'), cls: 's1' }]} format={percent} current={last ? percent(last.cpu) : ''} />
        <Chart
          title="Memory"
          series={[{ label: 'Memory', values: H.series('mem'), cls: 's2' }]}
          format={ibytes}
          current={last ? `${ibytes(last.mem)}${last.memLimit ? ` of ${ibytes(last.memLimit)}` : ''}` : ''}
        />
        <Chart
          title="Network"
          series={[
            { label: 'received', values: H.series('rx'), cls: 's3' },
            { label: 'sent', values: H.series('tx'), cls: 's4' },
          ]}
          format={rate}
          current={last ? `↓ ${rate(last.rx)} ↑ ${rate(last.tx)}` : ''}
        />
        <Chart
          title="Block I/O"
          series={[
            { label: 'read', values: H.series('read'), cls: 's3' },
            { label: 'write', values: H.series('write'), cls: 's4' },
          ]}
          format={rate}
          current={last ? `read ${rate(last.read)} · write ${rate(last.write)}` : ''}
        />
      </div>
      <p class="muted">
        {H.points.length} samples, one a second, kept while this page is open{last ? ` · ${last.pids} processes` : ''}.
      </p>
      {top && (
        <section class="card">
          <h3>Processes</h3>
          <table class="mini">
            <thead>
              <tr>
                {top.Titles.map((t) => (
                  <th key={t}>{t}</th>
                ))}
              </tr>
            </thead>
            <tbody>
              {top.Processes.map((p, i) => (
                <tr key={i}>
                  {p.map((v, j) => (
                    <td key={j} class="mono">
                      {v}
                    </td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      )}
    </div>
  );
}
