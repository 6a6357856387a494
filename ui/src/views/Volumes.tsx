import { useEffect, useState } from 'preact/hooks';
import { act, call, load, showError, toast, useStore } from '../store';
import { bytes, date } from '../lib/format';
import { toBerthError } from '../transport';
import { confirm, Empty, ErrorBox, Icon, IconButton, Modal, Spinner } from '../components/ui';

interface Entry {
  name: string;
  kind: 'dir' | 'file' | 'link';
  size: number;
  mode: string;
  mtime: number;
}

function Browse({ volume, onClose }: { volume: string; onClose: () => void }) {
  const [path, setPath] = useState('');
  const [entries, setEntries] = useState<Entry[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    setEntries(null);
    call<{ entries: Entry[] }>('volume.browse', { name: volume, path })
      .then((r) => {
        setEntries(r.entries);
        setError(null);
      })
      .catch((e) => setError(toBerthError(e).message));
  }, [volume, path]);
  const parts = path.split('/').filter(Boolean);
  return (
    <Modal title={`Files in ${volume}`} onClose={onClose} wide>
      <nav class="crumbs" aria-label="Folder">
        <button type="button" class="link" onClick={() => setPath('')}>
          {volume}
        </button>
        {parts.map((p, i) => (
          <span key={i}>
            {' / '}
            <button type="button" class="link" onClick={() => setPath(parts.slice(0, i + 1).join('/'))}>
              {p}
            </button>
          </span>
        ))}
      </nav>
      {error && <ErrorBox title="Cannot list the files" message={error} />}
      {!entries && !error && <Spinner />}
      {entries && entries.length === 0 && <p class="muted">Empty folder.</p>}
      {entries && entries.length > 0 && (
        <table class="mini files">
          <thead>
            <tr>
              <th>Name</th>
              <th class="num">Size</th>
              <th>Mode</th>
              <th>Modified</th>
            </tr>
          </thead>
          <tbody>
            {entries.map((e) => (
              <tr key={e.name}>
                <td>
                  {e.kind === 'dir' ? (
                    <button type="button" class="link" onClick={() => setPath(parts.concat(e.name).join('/'))}>
                      <Icon name="folder" /> {e.name}
                    </button>
                  ) : (
                    <span>
                      <Icon name="file" /> {e.name}
                      {e.kind === 'link' ? ' (link)' : ''}
                    </span>
                  )}
                </td>
                <td class="num">{e.kind === 'dir' ? '' : bytes(e.size)}</td>
                <td class="mono">{e.mode}</td>
                <td>{date(e.mtime)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Modal>
  );
}

export async function deleteVolume(name: string, usedBy: string[]) {
  if (!(await confirm(`Delete the volume ${name}?`, usedBy.length ? `It is used by ${usedBy.join(', ')}: the engine will refuse while a container uses it.` : 'Its data is deleted for good.'))) return;
  try {
    await call('volume.remove', { name });
    toast({ kind: 'success', title: `Deleted ${name}` });
  } catch (e) {
    showError(`Could not delete the volume ${name}`, e);
  }
}

export function Volumes() {
  const list = useStore((s) => s.volumes);
  const [creating, setCreating] = useState(false);
  const [newName, setNewName] = useState('');
  const [browse, setBrowse] = useState<string | null>(null);
  const [sizes, setSizes] = useState<Record<string, number>>({});
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    void load('volumes');
  }, []);
  useEffect(() => {
    // Sizes come from /system/df, which walks the volumes: once per list.
    if (!list.items?.length) return;
    call<{ Volumes?: { Name: string; UsageData?: { Size: number } }[] }>('system.df')
      .then((df) => setSizes(Object.fromEntries((df.Volumes ?? []).map((v) => [v.Name, v.UsageData?.Size ?? -1]))))
      .catch(() => {});
  }, [list.items]);
  const create = async (e: Event) => {
    e.preventDefault();
    try {
      await call('volume.create', { name: newName.trim() });
      toast({ kind: 'success', title: `Created ${newName.trim() || 'a volume'}` });
      setCreating(false);
      setNewName('');
      setError(null);
    } catch (err) {
      setError(toBerthError(err).message);
    }
  };
  const prune = async () => {
    if (!(await confirm('Remove unused volumes?', 'Anonymous volumes no container uses are deleted with their data.', 'Remove'))) return;
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const r = await act<any>('volumes-prune', 'pruning', () => call('volumes.prune'), 'Could not prune volumes');
    if (r) toast({ kind: 'success', title: `Removed ${(r.VolumesDeleted ?? []).length} volumes`, message: `Reclaimed ${bytes(r.SpaceReclaimed ?? 0)}` });
  };
  const items = [...(list.items ?? [])].sort((a, b) => a.Name.localeCompare(b.Name));
  return (
    <section class="view" aria-labelledby="volumes-title">
      <header class="view-header">
        <h1 id="volumes-title">Volumes</h1>
        <div class="toolbar">
          <button type="button" class="primary" onClick={() => setCreating(true)}>
            <Icon name="plus" /> Create
          </button>
          <button type="button" onClick={prune}>
            <Icon name="trash" /> Prune
          </button>
        </div>
      </header>
      {list.error && <ErrorBox title="The volumes could not be listed" message={list.error} />}
      {list.items === null && !list.error && <Spinner />}
      {list.items !== null && items.length === 0 && <Empty title="No volumes">Create one, or run a container with -v name:/path.</Empty>}
      {items.length > 0 && (
        <table class="list volumes" aria-label="Volumes">
          <thead>
            <tr>
              <th>Name</th>
              <th>Driver</th>
              <th>Used by</th>
              <th class="num">Size</th>
              <th>Created</th>
              <th class="actions">Actions</th>
            </tr>
          </thead>
          <tbody>
            {items.map((v) => (
              <tr key={v.Name} data-name={v.Name}>
                <td class="name mono" title={v.Mountpoint}>
                  {v.Name}
                </td>
                <td>{v.Driver}</td>
                <td>{v.UsedBy?.length ? v.UsedBy.map((c) => <span class="badge inuse" key={c}>{c}</span>) : <span class="muted">—</span>}</td>
                <td class="num">{sizes[v.Name] != null && sizes[v.Name] >= 0 ? bytes(sizes[v.Name]) : '—'}</td>
                <td>{date(v.CreatedAt)}</td>
                <td class="actions">
                  <IconButton icon="folder" label={`Browse ${v.Name}`} onClick={() => setBrowse(v.Name)} />
                  <IconButton icon="trash" label={`Delete ${v.Name}`} danger onClick={() => void deleteVolume(v.Name, v.UsedBy ?? [])} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {creating && (
        <Modal
          title="Create a volume"
          onClose={() => setCreating(false)}
          footer={
            <>
              <button type="button" onClick={() => setCreating(false)}>
                Cancel
              </button>
              <button type="submit" form="vol-form" class="primary">
                Create
              </button>
            </>
          }
        >
          <form id="vol-form" class="form" onSubmit={create}>
            {error && <ErrorBox title="Could not create the volume" message={error} />}
            <label>
              Name <span class="muted">(empty: a random name)</span>
              <input type="text" class="mono" value={newName} onInput={(e) => setNewName(e.currentTarget.value)} />
            </label>
          </form>
        </Modal>
      )}
      {browse && <Browse volume={browse} onClose={() => setBrowse(null)} />}
    </section>
  );
}
