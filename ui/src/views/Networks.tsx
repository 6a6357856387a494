import { useEffect, useState } from 'preact/hooks';
import { call, load, showError, toast, useStore } from '../store';
import { date } from '../lib/format';
import { toBerthError } from '../transport';
import { confirm, Empty, ErrorBox, Icon, IconButton, Modal, Spinner } from '../components/ui';

const BUILTIN = new Set(['bridge', 'host', 'none']);

export function Networks() {
  const list = useStore((s) => s.networks);
  const [creating, setCreating] = useState(false);
  const [form, setForm] = useState({ name: '', driver: 'bridge', subnet: '', gateway: '', internal: false });
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    void load('networks');
  }, []);
  const create = async (e: Event) => {
    e.preventDefault();
    try {
      await call('network.create', form);
      toast({ kind: 'success', title: `Created ${form.name}` });
      setCreating(false);
      setForm({ name: '', driver: 'bridge', subnet: '', gateway: '', internal: false });
      setError(null);
    } catch (err) {
      setError(toBerthError(err).message);
    }
  };
  const remove = async (id: string, name: string) => {
    if (!(await confirm(`Delete the network ${name}?`, 'Containers attached to it must be disconnected first.'))) return;
    try {
      await call('network.remove', { id });
      toast({ kind: 'success', title: `Deleted ${name}` });
    } catch (e) {
      showError(`Could not delete the network ${name}`, e);
    }
  };
  const items = [...(list.items ?? [])].sort((a, b) => a.Name.localeCompare(b.Name));
  return (
    <section class="view" aria-labelledby="networks-title">
      <header class="view-header">
        <h1 id="networks-title">Networks</h1>
        <div class="toolbar">
          <button type="button" class="primary" onClick={() => setCreating(true)}>
            <Icon name="plus" /> Create
          </button>
        </div>
      </header>
      {list.error && <ErrorBox title="The networks could not be listed" message={list.error} />}
      {list.items === null && !list.error && <Spinner />}
      {list.items !== null && items.length === 0 && <Empty title="No networks" />}
      {items.length > 0 && (
        <table class="list networks" aria-label="Networks">
          <thead>
            <tr>
              <th>Name</th>
              <th>Driver</th>
              <th>Subnet</th>
              <th>Gateway</th>
              <th>Containers</th>
              <th>Created</th>
              <th class="actions">Actions</th>
            </tr>
          </thead>
          <tbody>
            {items.map((n) => {
              const cfg = n.IPAM?.Config?.[0];
              return (
                <tr key={n.Id} data-name={n.Name}>
                  <td class="name">
                    {n.Name} {n.Internal && <span class="badge">internal</span>}
                    <div class="sub mono">{n.Id.slice(0, 12)}</div>
                  </td>
                  <td>{n.Driver}</td>
                  <td class="mono">{cfg?.Subnet ?? '—'}</td>
                  <td class="mono">{cfg?.Gateway ?? '—'}</td>
                  <td>{n.Attached?.length ? n.Attached.map((c) => <span class="badge inuse" key={c}>{c}</span>) : <span class="muted">—</span>}</td>
                  <td>{date(n.Created)}</td>
                  <td class="actions">
                    <IconButton icon="trash" label={`Delete ${n.Name}`} danger disabled={BUILTIN.has(n.Name)} onClick={() => void remove(n.Id, n.Name)} />
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {creating && (
        <Modal
          title="Create a network"
          onClose={() => setCreating(false)}
          footer={
            <>
              <button type="button" onClick={() => setCreating(false)}>
                Cancel
              </button>
              <button type="submit" form="net-form" class="primary" disabled={!form.name.trim()}>
                Create
              </button>
            </>
          }
        >
          <form id="net-form" class="form" onSubmit={create}>
            {error && <ErrorBox title="Could not create the network" message={error} />}
            <label>
              Name
              <input type="text" class="mono" value={form.name} onInput={(e) => setForm({ ...form, name: e.currentTarget.value })} />
            </label>
            <label>
              Driver
              <select value={form.driver} onChange={(e) => setForm({ ...form, driver: e.currentTarget.value })}>
                <option value="bridge">bridge</option>
              </select>
            </label>
            <div class="row">
              <label>
                Subnet <span class="muted">(optional)</span>
                <input type="text" class="mono" placeholder="172.30.0.0/16" value={form.subnet} onInput={(e) => setForm({ ...form, subnet: e.currentTarget.value })} />
              </label>
              <label>
                Gateway <span class="muted">(optional)</span>
                <input type="text" class="mono" placeholder="172.30.0.1" value={form.gateway} onInput={(e) => setForm({ ...form, gateway: e.currentTarget.value })} />
              </label>
            </div>
            <label class="check">
              <input type="checkbox" checked={form.internal} onChange={(e) => setForm({ ...form, internal: e.currentTarget.checked })} /> Internal (no access to the outside)
            </label>
          </form>
        </Modal>
      )}
    </section>
  );
}
