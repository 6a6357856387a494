import { useEffect, useLayoutEffect, useMemo, useState } from 'preact/hooks';
import { act, call, load, store, useStore } from '../store';
import { filter, groupByProject, isRunning, name, ports, type StatusFilter } from '../lib/containers';
import { ibytes, percent } from '../lib/format';
import { getTransport, type StreamHandle } from '../transport';
import type { ContainerSummary } from '../types';
import { confirm, Empty, ErrorBox, IconButton, Icon, Spinner, StatePill } from '../components/ui';
import { navigate } from '../router';
import { markPainted } from '../lib/marks';
import { sameOnScreen } from '../lib/stats';

export async function containerAction(c: ContainerSummary, action: 'start' | 'stop' | 'restart' | 'pause' | 'unpause' | 'remove') {
  const n = name(c);
  if (action === 'remove') {
    const running = isRunning(c) || c.State === 'paused';
    const ok = await confirm(`Delete ${n}?`, running ? `${n} is running: it will be stopped and deleted.` : `The container ${n} will be deleted.`);
    if (!ok) return false;
  }
  const labels = { start: 'start', stop: 'stop', restart: 'restart', pause: 'pause', unpause: 'resume', remove: 'delete' };
  const busyLabels = { start: 'starting', stop: 'stopping', restart: 'restarting', pause: 'pausing', unpause: 'resuming', remove: 'deleting' };
  const args = action === 'remove' ? { id: c.Id, force: true } : { id: c.Id };
  const r = await act(c.Id, busyLabels[action], () => call(`container.${action}`, args), `Could not ${labels[action]} ${n}`);
  return r !== undefined;
}

/** Live CPU/memory of running containers, only while the list is on screen and visible. */
function useListStats(active: boolean) {
  useEffect(() => {
    if (!active) return;
    let h: StreamHandle | null = null;
    let closed = false;
    const start = async () => {
      if (h || closed || document.visibilityState !== 'visible') return;
      try {
        h = await getTransport().open('stats_all', { intervalMs: 3000 }, (m) => {
          if (m.type === 'data' && !sameOnScreen(store.get().listStats, m.data)) store.set({ listStats: m.data });
        });
        if (closed) h.close();
      } catch {
        /* the engine banner explains */
      }
    };
    const onVis = () => {
      if (document.visibilityState === 'visible') void start();
      else {
        h?.close();
        h = null;
      }
    };
    void start();
    document.addEventListener('visibilitychange', onVis);
    return () => {
      closed = true;
      document.removeEventListener('visibilitychange', onVis);
      h?.close();
    };
  }, [active]);
}

export function Containers() {
  const list = useStore((s) => s.containers);
  const engineUp = useStore((s) => s.engine.state === 'running');
  const stats = useStore((s) => s.listStats);
  const busy = useStore((s) => s.busy);
  const [query, setQuery] = useState('');
  const [status, setStatus] = useState<StatusFilter>('all');
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [collapsed, setCollapsed] = useState<Set<string>>(new Set());

  useEffect(() => {
    void load('containers');
  }, []);
  useListStats(engineUp);
  // First paint of the engine's list (bench/app measures start-up with it).
  useLayoutEffect(() => {
    if (list.items !== null && !list.error) markPainted('containers-painted', { rows: list.items.length });
  }, [list.items, list.error]);

  const items = list.items ?? [];
  const shown = useMemo(() => filter(items, query, status), [items, query, status]);
  const groups = useMemo(() => groupByProject(shown), [shown]);
  const sel = [...selected].filter((id) => items.some((c) => c.Id === id));
  const selectedItems = items.filter((c) => selected.has(c.Id));
  const allShownSelected = shown.length > 0 && shown.every((c) => selected.has(c.Id));

  const toggle = (id: string) => {
    const s = new Set(selected);
    if (s.has(id)) s.delete(id);
    else s.add(id);
    setSelected(s);
  };
  const bulk = async (action: 'start' | 'stop' | 'restart' | 'remove') => {
    if (action === 'remove' && !(await confirm(`Delete ${sel.length} containers?`, 'Running containers are stopped first.'))) return;
    await Promise.all(selectedItems.map((c) => act(c.Id, action, () => call(`container.${action}`, action === 'remove' ? { id: c.Id, force: true } : { id: c.Id }), `Could not ${action} ${name(c)}`)));
    if (action === 'remove') setSelected(new Set());
  };

  return (
    <section class="view" aria-labelledby="containers-title">
      <header class="view-header">
        <h1 id="containers-title">Containers</h1>
        <div class="toolbar">
          <label class="search">
            <Icon name="search" />
            <input type="search" placeholder="Search name, image, port, project" aria-label="Search containers" value={query} onInput={(e) => setQuery(e.currentTarget.value)} />
          </label>
          <select aria-label="Show" value={status} onChange={(e) => setStatus(e.currentTarget.value as StatusFilter)}>
            <option value="all">All</option>
            <option value="running">Running</option>
            <option value="stopped">Stopped</option>
          </select>
        </div>
      </header>
      {sel.length > 0 && (
        <div class="bulkbar" role="toolbar" aria-label="Selected containers">
          <span>{sel.length} selected</span>
          <button type="button" onClick={() => bulk('start')}>
            <Icon name="play" /> Start
          </button>
          <button type="button" onClick={() => bulk('stop')}>
            <Icon name="stop" /> Stop
          </button>
          <button type="button" onClick={() => bulk('restart')}>
            <Icon name="restart" /> Restart
          </button>
          <button type="button" class="danger" onClick={() => bulk('remove')}>
            <Icon name="trash" /> Delete
          </button>
          <button type="button" class="link" onClick={() => setSelected(new Set())}>
            Clear selection
          </button>
        </div>
      )}
      {list.error && <ErrorBox title="The containers could not be listed" message={list.error} />}
      {list.items === null && !list.error && <Spinner />}
      {list.items !== null && items.length === 0 && (
        <Empty title="No containers yet">
          Pull an image in <a href="#/images">Images</a> and run it, or use the docker CLI: <code>docker run -d -p 8080:80 nginx</code>
        </Empty>
      )}
      {items.length > 0 && (
        <table class="list containers" aria-label="Containers">
          <thead>
            <tr>
              <th class="check">
                <input
                  type="checkbox"
                  aria-label="Select all"
                  checked={allShownSelected}
                  onChange={() => setSelected(allShownSelected ? new Set() : new Set(shown.map((c) => c.Id)))}
                />
              </th>
              <th>Name</th>
              <th>Image</th>
              <th>State</th>
              <th>Ports</th>
              <th>Status</th>
              <th class="num">CPU</th>
              <th class="num">Memory</th>
              <th class="actions">Actions</th>
            </tr>
          </thead>
          {groups.map((g) => {
            const key = g.project ?? '';
            const isCollapsed = collapsed.has(key);
            return (
              <tbody key={key} data-project={g.project ?? undefined}>
                {g.project && (
                  <tr class="group-row">
                    <td colSpan={9}>
                      <button
                        type="button"
                        class="link group-toggle"
                        aria-expanded={!isCollapsed}
                        onClick={() => {
                          const s = new Set(collapsed);
                          if (s.has(key)) s.delete(key);
                          else s.add(key);
                          setCollapsed(s);
                        }}
                      >
                        <Icon name={isCollapsed ? 'down' : 'up'} /> <Icon name="layers" /> <strong>{g.project}</strong>
                      </button>
                      <span class="muted">
                        {' '}
                        compose · {g.running}/{g.containers.length} running
                      </span>
                    </td>
                  </tr>
                )}
                {!isCollapsed &&
                  g.containers.map((c) => {
                    const st = stats[c.Id];
                    const running = isRunning(c);
                    const b = busy[c.Id];
                    return (
                      <tr key={c.Id} data-name={name(c)} data-state={c.State} class={selected.has(c.Id) ? 'selected' : ''}>
                        <td class="check">
                          <input type="checkbox" aria-label={`Select ${name(c)}`} checked={selected.has(c.Id)} onChange={() => toggle(c.Id)} />
                        </td>
                        <td class="name">
                          <a href={`#/containers/${c.Id}/logs`}>{name(c)}</a>
                          <div class="sub mono">{c.Id.slice(0, 12)}</div>
                        </td>
                        <td class="image" title={c.Image}>
                          {c.Image}
                        </td>
                        <td>
                          <StatePill state={c.State} label={b ?? c.State} />
                        </td>
                        <td class="ports">
                          {ports(c.Ports).map((p) =>
                            p.url ? (
                              <a
                                key={p.key}
                                href={p.url}
                                class="port"
                                onClick={(e) => {
                                  e.preventDefault();
                                  getTransport().openUrl(p.url!);
                                }}
                                title={`Open ${p.url}`}
                              >
                                {p.label} <Icon name="external" size={12} />
                              </a>
                            ) : (
                              <span key={p.key} class="port plain">
                                {p.label}
                              </span>
                            ),
                          )}
                        </td>
                        <td class="status">{c.Status}</td>
                        <td class="num">{running && st ? percent(st.cpu) : '—'}</td>
                        <td class="num">{running && st ? ibytes(st.mem) : '—'}</td>
                        <td class="actions">
                          {running || c.State === 'paused' ? (
                            <IconButton icon="stop" label={`Stop ${name(c)}`} busy={!!b} onClick={() => containerAction(c, 'stop')} />
                          ) : (
                            <IconButton icon="play" label={`Start ${name(c)}`} busy={!!b} onClick={() => containerAction(c, 'start')} />
                          )}
                          {c.State === 'paused' ? (
                            <IconButton icon="play" label={`Resume ${name(c)}`} busy={!!b} onClick={() => containerAction(c, 'unpause')} />
                          ) : (
                            <IconButton icon="pause" label={`Pause ${name(c)}`} disabled={!running} busy={!!b} onClick={() => containerAction(c, 'pause')} />
                          )}
                          <IconButton icon="restart" label={`Restart ${name(c)}`} busy={!!b} onClick={() => containerAction(c, 'restart')} />
                          <IconButton icon="terminal" label={`Open a terminal in ${name(c)}`} disabled={!running} onClick={() => navigate(`#/containers/${c.Id}/terminal`)} />
                          <IconButton icon="trash" label={`Delete ${name(c)}`} danger busy={!!b} onClick={() => containerAction(c, 'remove')} />
                        </td>
                      </tr>
                    );
                  })}
              </tbody>
            );
          })}
        </table>
      )}
      {items.length > 0 && shown.length === 0 && <p class="muted center">No container matches “{query}”.</p>}
    </section>
  );
}
