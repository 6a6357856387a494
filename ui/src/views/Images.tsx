import { useEffect, useState } from 'preact/hooks';
import { act, call, load, showError, toast, useStore } from '../store';
import { apply, finish, initial, type PullState, type ProgressMessage } from '../lib/pull';
import { ago, bytes, date, shortId, splitRef } from '../lib/format';
import { getTransport, toBerthError } from '../transport';
import type { ImageSummary } from '../types';
import { confirm, Empty, ErrorBox, Icon, IconButton, Modal, Spinner } from '../components/ui';
import { navigate } from '../router';

interface Row {
  image: ImageSummary;
  ref: string;
  repo: string;
  tag: string;
}

export function rows(images: ImageSummary[]): Row[] {
  const out: Row[] = [];
  for (const i of images) {
    const tags = (i.RepoTags ?? []).filter((t) => t !== '<none>:<none>');
    if (!tags.length) out.push({ image: i, ref: shortId(i.Id), repo: '<none>', tag: '<none>' });
    for (const t of tags) out.push({ image: i, ref: t, ...splitRef(t) });
  }
  return out.sort((a, b) => a.repo.localeCompare(b.repo) || a.tag.localeCompare(b.tag));
}

// ---- pull / push progress ---------------------------------------------------------------

interface Job {
  key: number;
  kind: 'pull' | 'push';
  ref: string;
  state: PullState;
  error?: string;
  finished: boolean;
}

let jobKey = 1;

function ProgressPanel({ job, onClose }: { job: Job; onClose: () => void }) {
  const s = job.state;
  const pct = Math.round(s.fraction * 100);
  const verb = job.kind === 'pull' ? 'Pulling' : 'Pushing';
  return (
    <div class={`progress-panel${job.error ? ' failed' : ''}`} role="group" aria-label={`${verb} ${job.ref}`} data-ref={job.ref}>
      <div class="progress-head">
        <strong>
          {job.finished ? (job.error ? `${job.kind === 'pull' ? 'Pull' : 'Push'} of ${job.ref} failed` : `${job.kind === 'pull' ? 'Pulled' : 'Pushed'} ${job.ref}`) : `${verb} ${job.ref}…`}
        </strong>
        <span class="muted">
          {s.total > 0 ? `${bytes(s.downloaded)} of ${bytes(s.total)} · ` : ''}
          {pct}%
        </span>
        {job.finished && <IconButton icon="x" label="Close" onClick={onClose} />}
      </div>
      <div class="bar" role="progressbar" aria-label={`${job.ref} overall`} aria-valuemin={0} aria-valuemax={100} aria-valuenow={pct}>
        <div style={{ width: `${pct}%` }} />
      </div>
      {job.error && <p class="error-text">{job.error}</p>}
      {s.layers.length > 0 && (
        <ul class="layers">
          {s.layers.map((l) => (
            <li key={l.id} data-phase={l.phase}>
              <span class="mono">{l.id.slice(0, 12)}</span>
              <div class="bar small" role="progressbar" aria-label={`layer ${l.id.slice(0, 12)}`} aria-valuenow={Math.round(l.fraction * 100)} aria-valuemin={0} aria-valuemax={100}>
                <div style={{ width: `${Math.round(l.fraction * 100)}%` }} />
              </div>
              <span class="layer-status">
                {l.status}
                {l.phase === 'downloading' && l.total ? ` ${bytes(l.current)} / ${bytes(l.total)}` : ''}
              </span>
            </li>
          ))}
        </ul>
      )}
      {s.messages.length > 0 && <p class="muted small">{s.messages[s.messages.length - 1]}</p>}
    </div>
  );
}

async function runJob(kind: 'pull' | 'push', ref: string, update: (j: Job) => void): Promise<boolean> {
  let job: Job = { key: jobKey++, kind, ref, state: initial(), finished: false };
  update(job);
  return new Promise((resolve) => {
    getTransport()
      .open(kind, { image: ref }, (m) => {
        if (m.type === 'data') {
          let st = job.state;
          for (const msg of m.data as ProgressMessage[]) st = apply(st, msg);
          job = { ...job, state: st };
          update(job);
        } else if (m.type === 'end') {
          job = { ...job, state: finish(job.state), finished: true };
          update(job);
          resolve(true);
        } else if (m.type === 'error') {
          job = { ...job, finished: true, error: m.error.message };
          update(job);
          resolve(false);
        }
      })
      .catch((e) => {
        job = { ...job, finished: true, error: toBerthError(e).message };
        update(job);
        resolve(false);
      });
  });
}

// ---- dialogs --------------------------------------------------------------------------------

interface PortRow {
  host: string;
  container: string;
  proto: string;
}
interface VolRow {
  source: string;
  target: string;
  readOnly: boolean;
}

export function RunDialog({ image, onClose }: { image: string; onClose: () => void }) {
  const [name, setName] = useState('');
  const [cmd, setCmd] = useState('');
  const [portRows, setPorts] = useState<PortRow[]>([]);
  const [env, setEnv] = useState('');
  const [vols, setVols] = useState<VolRow[]>([]);
  const [restart, setRestart] = useState('no');
  const [autoRemove, setAutoRemove] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [exposed, setExposed] = useState<string[]>([]);

  useEffect(() => {
    call<{ Config?: { ExposedPorts?: Record<string, unknown> } }>('image.inspect', { id: image })
      .then((i) => {
        const ps = Object.keys(i.Config?.ExposedPorts ?? {});
        setExposed(ps);
        if (ps.length) setPorts(ps.map((p) => ({ host: '', container: p.split('/')[0], proto: p.split('/')[1] ?? 'tcp' })));
      })
      .catch(() => {});
  }, [image]);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const spec = {
        image,
        name: name.trim() || undefined,
        cmd: cmd.trim() || undefined,
        env: env.split('\n').map((l) => l.trim()).filter(Boolean),
        ports: portRows.filter((p) => p.container.trim()).map((p) => ({ host: p.host.trim(), container: p.container.trim(), proto: p.proto })),
        volumes: vols.filter((v) => v.target.trim()),
        restart,
        autoRemove,
      };
      const r = await call<{ Id: string }>('container.run', { spec });
      toast({ kind: 'success', title: `Started ${name.trim() || shortId(r.Id)}` });
      onClose();
      navigate(`#/containers/${r.Id}/logs`);
    } catch (err) {
      setError(toBerthError(err).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Modal
      title={`Run ${image}`}
      onClose={onClose}
      wide
      footer={
        <>
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" form="run-form" class="primary" disabled={busy}>
            <Icon name="play" /> {busy ? 'Starting…' : 'Run'}
          </button>
        </>
      }
    >
      <form id="run-form" class="form" onSubmit={submit}>
        {error && <ErrorBox title="The container could not be started" message={error} />}
        <label>
          Name
          <input type="text" value={name} placeholder="a random name" onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <label>
          Command
          <input type="text" class="mono" value={cmd} placeholder="the image's default command" onInput={(e) => setCmd(e.currentTarget.value)} />
        </label>
        <fieldset>
          <legend>Ports {exposed.length > 0 && <span class="muted">(the image exposes {exposed.join(', ')})</span>}</legend>
          {portRows.map((p, i) => (
            <div class="row" key={i}>
              <input type="text" aria-label={`Host port ${i + 1}`} placeholder="host port (empty: any)" value={p.host} onInput={(e) => setPorts(portRows.map((q, j) => (j === i ? { ...q, host: e.currentTarget.value } : q)))} />
              <span>→</span>
              <input type="text" aria-label={`Container port ${i + 1}`} placeholder="container port" value={p.container} onInput={(e) => setPorts(portRows.map((q, j) => (j === i ? { ...q, container: e.currentTarget.value } : q)))} />
              <select aria-label={`Protocol ${i + 1}`} value={p.proto} onChange={(e) => setPorts(portRows.map((q, j) => (j === i ? { ...q, proto: e.currentTarget.value } : q)))}>
                <option>tcp</option>
                <option>udp</option>
              </select>
              <IconButton icon="x" label={`Remove port ${i + 1}`} onClick={() => setPorts(portRows.filter((_, j) => j !== i))} />
            </div>
          ))}
          <button type="button" class="link" onClick={() => setPorts([...portRows, { host: '', container: '', proto: 'tcp' }])}>
            <Icon name="plus" /> Add a port
          </button>
        </fieldset>
        <label>
          Environment <span class="muted">(one KEY=value a line)</span>
          <textarea rows={3} class="mono" value={env} onInput={(e) => setEnv(e.currentTarget.value)} />
        </label>
        <fieldset>
          <legend>Volumes and bind mounts</legend>
          {vols.map((v, i) => (
            <div class="row" key={i}>
              <input type="text" aria-label={`Volume or host path ${i + 1}`} placeholder="volume name or /host/path" value={v.source} onInput={(e) => setVols(vols.map((q, j) => (j === i ? { ...q, source: e.currentTarget.value } : q)))} />
              <span>→</span>
              <input type="text" aria-label={`Container path ${i + 1}`} placeholder="/path/in/container" value={v.target} onInput={(e) => setVols(vols.map((q, j) => (j === i ? { ...q, target: e.currentTarget.value } : q)))} />
              <label class="check">
                <input type="checkbox" checked={v.readOnly} onChange={(e) => setVols(vols.map((q, j) => (j === i ? { ...q, readOnly: e.currentTarget.checked } : q)))} /> read-only
              </label>
              <IconButton icon="x" label={`Remove mount ${i + 1}`} onClick={() => setVols(vols.filter((_, j) => j !== i))} />
            </div>
          ))}
          <button type="button" class="link" onClick={() => setVols([...vols, { source: '', target: '', readOnly: false }])}>
            <Icon name="plus" /> Add a volume
          </button>
        </fieldset>
        <div class="row">
          <label>
            Restart policy
            <select value={restart} onChange={(e) => setRestart(e.currentTarget.value)}>
              <option value="no">no</option>
              <option value="always">always</option>
              <option value="unless-stopped">unless-stopped</option>
              <option value="on-failure">on-failure</option>
            </select>
          </label>
          <label class="check">
            <input type="checkbox" checked={autoRemove} onChange={(e) => setAutoRemove(e.currentTarget.checked)} /> Remove when it exits
          </label>
        </div>
      </form>
    </Modal>
  );
}

function TagDialog({ source, onClose }: { source: string; onClose: () => void }) {
  const [target, setTarget] = useState(source.includes(':') ? source : `${source}:latest`);
  const [error, setError] = useState<string | null>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    try {
      await call('image.tag', { id: source, target });
      toast({ kind: 'success', title: `Tagged ${target}` });
      onClose();
    } catch (err) {
      setError(toBerthError(err).message);
    }
  };
  return (
    <Modal
      title={`Tag ${source}`}
      onClose={onClose}
      footer={
        <>
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" form="tag-form" class="primary">
            Tag
          </button>
        </>
      }
    >
      <form id="tag-form" class="form" onSubmit={submit}>
        {error && <ErrorBox title="Could not tag" message={error} />}
        <label>
          New name <span class="muted">(registry/repository:tag)</span>
          <input type="text" class="mono" value={target} onInput={(e) => setTarget(e.currentTarget.value)} />
        </label>
      </form>
    </Modal>
  );
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function HistoryDialog({ image, onClose }: { image: string; onClose: () => void }) {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const [h, setH] = useState<any[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    call<unknown[]>('image.history', { id: image })
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      .then((v) => setH(v as any[]))
      .catch((e) => setError(toBerthError(e).message));
  }, [image]);
  return (
    <Modal title={`Layers of ${image}`} onClose={onClose} wide>
      {error && <ErrorBox title="No history" message={error} />}
      {!h && !error && <Spinner />}
      {h && (
        <table class="mini history">
          <thead>
            <tr>
              <th>Created</th>
              <th>Created by</th>
              <th class="num">Size</th>
            </tr>
          </thead>
          <tbody>
            {h.map((l, i) => (
              <tr key={i}>
                <td>{ago(l.Created)}</td>
                <td class="mono wrap">{(l.CreatedBy ?? '').replace(/^\/bin\/sh -c #\(nop\)\s*/, '')}</td>
                <td class="num">{bytes(l.Size)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Modal>
  );
}

// ---- view --------------------------------------------------------------------------------------

export async function deleteImage(ref: string, id: string, force = false): Promise<void> {
  if (!force && !(await confirm(`Delete ${ref}?`, `The image ${ref} will be deleted (its layers too when no other image uses them).`))) return;
  try {
    await call('image.remove', { id: ref.startsWith('<none>') ? id : ref, force });
    toast({ kind: 'success', title: `Deleted ${ref}` });
  } catch (e) {
    const err = toBerthError(e);
    showError(`Could not delete ${ref}`, err, err.kind === 'conflict' ? { label: 'Force delete', run: () => void deleteImage(ref, id, true) } : undefined);
  }
}

export function Images() {
  const list = useStore((s) => s.images);
  const [ref, setRef] = useState('');
  const [jobs, setJobs] = useState<Job[]>([]);
  const [query, setQuery] = useState('');
  const [dialog, setDialog] = useState<{ kind: 'run' | 'tag' | 'history'; ref: string } | null>(null);

  useEffect(() => {
    void load('images');
  }, []);

  const startJob = async (kind: 'pull' | 'push', r: string) => {
    const upd = (j: Job) => setJobs((js) => (js.some((x) => x.key === j.key) ? js.map((x) => (x.key === j.key ? j : x)) : [j, ...js]));
    const ok = await runJob(kind, r, upd);
    if (ok && kind === 'pull') void load('images');
  };
  const pull = (e: Event) => {
    e.preventDefault();
    const r = ref.trim();
    if (!r) return;
    setRef('');
    void startJob('pull', r);
  };
  const prune = async () => {
    if (!(await confirm('Remove unused images?', 'Dangling images (no tag, not used by a container) are deleted.', 'Remove'))) return;
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const r = await act<any>('images-prune', 'pruning', () => call('images.prune', { all: false }), 'Could not prune images');
    if (r) toast({ kind: 'success', title: `Removed ${(r.ImagesDeleted ?? []).length} images`, message: `Reclaimed ${bytes(r.SpaceReclaimed ?? 0)}` });
  };
  const items = rows(list.items ?? []).filter((r) => !query || r.ref.toLowerCase().includes(query.toLowerCase()) || r.image.Id.includes(query));
  const total = (list.items ?? []).reduce((a, i) => a + (i.Size ?? 0), 0);
  return (
    <section class="view" aria-labelledby="images-title">
      <header class="view-header">
        <h1 id="images-title">Images</h1>
        <div class="toolbar">
          <form class="pull-form" onSubmit={pull}>
            <input type="text" class="mono" aria-label="Image to pull" placeholder="busybox:latest" value={ref} onInput={(e) => setRef(e.currentTarget.value)} />
            <button type="submit" class="primary" disabled={!ref.trim()}>
              <Icon name="download" /> Pull
            </button>
          </form>
          <label class="search">
            <Icon name="search" />
            <input type="search" aria-label="Search images" placeholder="Search" value={query} onInput={(e) => setQuery(e.currentTarget.value)} />
          </label>
          <button type="button" onClick={prune}>
            <Icon name="trash" /> Prune
          </button>
        </div>
      </header>
      {jobs.map((j) => (
        <ProgressPanel key={j.key} job={j} onClose={() => setJobs((js) => js.filter((x) => x.key !== j.key))} />
      ))}
      {list.error && <ErrorBox title="The images could not be listed" message={list.error} />}
      {list.items === null && !list.error && <Spinner />}
      {list.items !== null && list.items.length === 0 && <Empty title="No images">Pull one above, for example busybox:latest.</Empty>}
      {items.length > 0 && (
        <>
          <p class="muted small">
            {list.items!.length} images · {bytes(total)}
          </p>
          <table class="list images" aria-label="Images">
            <thead>
              <tr>
                <th>Repository</th>
                <th>Tag</th>
                <th>Image ID</th>
                <th>Created</th>
                <th class="num">Size</th>
                <th>Use</th>
                <th class="actions">Actions</th>
              </tr>
            </thead>
            <tbody>
              {items.map((r) => (
                <tr key={r.ref + r.image.Id} data-ref={r.ref}>
                  <td class="name">{r.repo}</td>
                  <td>{r.tag}</td>
                  <td class="mono">{shortId(r.image.Id)}</td>
                  <td title={date(r.image.Created)}>{ago(r.image.Created)}</td>
                  <td class="num">{bytes(r.image.Size)}</td>
                  <td>
                    {r.image.UsedBy?.length ? (
                      <span class="badge inuse" title={r.image.UsedBy.join(', ')}>
                        in use ({r.image.UsedBy.length})
                      </span>
                    ) : r.image.Dangling ? (
                      <span class="badge dangling">dangling</span>
                    ) : (
                      <span class="badge">unused</span>
                    )}
                  </td>
                  <td class="actions">
                    <IconButton icon="play" label={`Run ${r.ref}`} onClick={() => setDialog({ kind: 'run', ref: r.ref.startsWith('<none>') ? r.image.Id : r.ref })} />
                    <IconButton icon="tag" label={`Tag ${r.ref}`} onClick={() => setDialog({ kind: 'tag', ref: r.ref.startsWith('<none>') ? r.image.Id : r.ref })} />
                    <IconButton icon="upload" label={`Push ${r.ref}`} disabled={r.ref.startsWith('<none>')} onClick={() => void startJob('push', r.ref)} />
                    <IconButton icon="history" label={`Layers of ${r.ref}`} onClick={() => setDialog({ kind: 'history', ref: r.ref.startsWith('<none>') ? r.image.Id : r.ref })} />
                    <IconButton icon="trash" label={`Delete ${r.ref}`} danger onClick={() => void deleteImage(r.ref, r.image.Id)} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      {dialog?.kind === 'run' && <RunDialog image={dialog.ref} onClose={() => setDialog(null)} />}
      {dialog?.kind === 'tag' && <TagDialog source={dialog.ref} onClose={() => setDialog(null)} />}
      {dialog?.kind === 'history' && <HistoryDialog image={dialog.ref} onClose={() => setDialog(null)} />}
    </section>
  );
}
