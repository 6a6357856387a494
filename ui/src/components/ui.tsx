import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { dismiss, store, useStore } from '../store';
import { niceMax } from '../lib/stats';

// ---- icons (inline SVG, currentColor) ----------------------------------------

const PATHS: Record<string, string> = {
  play: 'M7 4.5v15l12-7.5z',
  stop: 'M6 6h12v12H6z',
  pause: 'M7 5h3.5v14H7zM13.5 5H17v14h-3.5z',
  restart: 'M12 5a7 7 0 1 1-6.6 4.7l1.9.6A5 5 0 1 0 12 7v3L7.5 6 12 2z',
  trash: 'M9 3h6l1 2h4v2H4V5h4zM6 9h12l-1 12H7z',
  terminal: 'M3 5h18v14H3zM6 9l3 3-3 3 1.2 1.2L11.4 12 7.2 7.8zM12 15h6v1.5h-6z',
  external: 'M14 4h6v6h-2V7.4l-7.3 7.3-1.4-1.4L16.6 6H14zM5 6h6v2H7v9h9v-4h2v6H5z',
  search: 'M10 3a7 7 0 0 1 5.6 11.2l4.6 4.6-1.4 1.4-4.6-4.6A7 7 0 1 1 10 3zm0 2a5 5 0 1 0 0 10 5 5 0 0 0 0-10z',
  x: 'M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12l5.6 5.6-1.4 1.4-5.6-5.6L6.4 19 5 17.6 10.6 12 5 6.4z',
  box: 'M12 2 21 7v10l-9 5-9-5V7zm0 2.3L5.5 8 12 11.7 18.5 8zM5 9.7v6.1l6 3.4v-6.1zm14 0-6 3.4v6.1l6-3.4z',
  layers: 'M12 3 22 8l-10 5L2 8zm-8 8.2 8 4 8-4 2 1-10 5-10-5zm0 4 8 4 8-4 2 1-10 5-10-5z',
  disk: 'M4 5h16v14H4zm2 2v10h12V7zm2 6h8v2H8z',
  net: 'M11 3h2v5h5v4h-2v-2H8v2H6V8h5zM3 14h6v6H3zm6-2zm6 2h6v6h-6zM9 14h6v6H9z',
  gear: 'M12 8.5a3.5 3.5 0 1 1 0 7 3.5 3.5 0 0 1 0-7zM10.5 2h3l.5 2.6 1.8.8 2.2-1.5 2.1 2.1-1.5 2.2.8 1.8 2.6.5v3l-2.6.5-.8 1.8 1.5 2.2-2.1 2.1-2.2-1.5-1.8.8-.5 2.6h-3l-.5-2.6-1.8-.8-2.2 1.5-2.1-2.1 1.5-2.2-.8-1.8L2 13.5v-3l2.6-.5.8-1.8-1.5-2.2 2.1-2.1 2.2 1.5 1.8-.8z',
  lifebuoy: 'M12 2a10 10 0 1 1 0 20 10 10 0 0 1 0-20zm0 5a5 5 0 1 0 0 10 5 5 0 0 0 0-10zM5.6 4.2 9 7.6 7.6 9 4.2 5.6zm12.8 0 1.4 1.4L16.4 9 15 7.6zM9 16.4 5.6 19.8l-1.4-1.4L7.6 15zm6 0 3.4 3.4-1.4 1.4-3.4-3.4z',
  download: 'M11 3h2v9l3-3 1.4 1.4L12 15.8 6.6 10.4 8 9l3 3zM4 18h16v2H4z',
  copy: 'M8 3h11v13h-2V5H8zM5 7h10v14H5z',
  plus: 'M11 5h2v6h6v2h-6v6h-2v-6H5v-2h6z',
  up: 'M12 6l6 6-1.4 1.4L12 8.8l-4.6 4.6L6 12z',
  down: 'M12 18l-6-6 1.4-1.4 4.6 4.6 4.6-4.6L18 12z',
  folder: 'M3 5h7l2 2h9v12H3z',
  file: 'M6 2h8l5 5v15H6zm7 1.5V8h4.5z',
  tag: 'M3 3h8l10 10-8 8L3 11zm4 3a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3z',
  upload: 'M11 16V7l-3 3-1.4-1.4L12 3.2l5.4 5.4L16 10l-3-3v9zM4 18h16v2H4z',
  history: 'M13 3a9 9 0 1 1-8.5 6h2.1A7 7 0 1 0 13 5V3zM12 8h2v5l4 2.3-1 1.7-5-3zM2 5l4 4H2z',
};

export function Icon({ name, size = 16 }: { name: keyof typeof PATHS | string; size?: number }) {
  return (
    <svg class="icon" width={size} height={size} viewBox="0 0 24 24" aria-hidden="true" focusable="false">
      <path d={PATHS[name] ?? PATHS.box} fill="currentColor" />
    </svg>
  );
}

export function IconButton(props: { icon: string; label: string; onClick: () => void; disabled?: boolean; danger?: boolean; busy?: boolean }) {
  return (
    <button
      type="button"
      class={`icon-btn${props.danger ? ' danger' : ''}${props.busy ? ' busy' : ''}`}
      aria-label={props.label}
      title={props.label}
      disabled={props.disabled || props.busy}
      onClick={(e) => {
        e.stopPropagation();
        props.onClick();
      }}
    >
      <Icon name={props.icon} />
    </button>
  );
}

export function StatePill({ state, label }: { state: string; label?: string }) {
  return (
    <span class={`pill state-${state}`} data-state={state}>
      <span class="dot" aria-hidden="true" />
      {label ?? state}
    </span>
  );
}

export function Spinner({ label = 'Loading' }: { label?: string }) {
  return <span class="spinner" role="status" aria-label={label} />;
}

export function ErrorBox({ title, message, children }: { title: string; message: string; children?: ComponentChildren }) {
  return (
    <div class="error-box" role="alert">
      <strong>{title}</strong>
      <p>{message}</p>
      {children}
    </div>
  );
}

export function Empty({ title, children }: { title: string; children?: ComponentChildren }) {
  return (
    <div class="empty">
      <Icon name="box" size={40} />
      <h3>{title}</h3>
      {children && <p>{children}</p>}
    </div>
  );
}

// ---- modal ---------------------------------------------------------------------

export function Modal(props: { title: string; onClose: () => void; children: ComponentChildren; wide?: boolean; footer?: ComponentChildren }) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const prev = document.activeElement as HTMLElement | null;
    const first = ref.current?.querySelector<HTMLElement>('input, select, textarea, button:not(.modal-x)');
    (first ?? ref.current)?.focus();
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape') {
        e.stopPropagation();
        props.onClose();
      } else if (e.key === 'Tab' && ref.current) {
        const f = [...ref.current.querySelectorAll<HTMLElement>('a[href], button:not([disabled]), input, select, textarea, [tabindex="0"]')];
        if (!f.length) return;
        const i = f.indexOf(document.activeElement as HTMLElement);
        if (e.shiftKey && i <= 0) {
          e.preventDefault();
          f[f.length - 1].focus();
        } else if (!e.shiftKey && i === f.length - 1) {
          e.preventDefault();
          f[0].focus();
        }
      }
    };
    document.addEventListener('keydown', onKey, true);
    return () => {
      document.removeEventListener('keydown', onKey, true);
      prev?.focus?.();
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
  return (
    <div class="modal-backdrop" onMouseDown={(e) => e.target === e.currentTarget && props.onClose()}>
      <div class={`modal${props.wide ? ' wide' : ''}`} role="dialog" aria-modal="true" aria-label={props.title} ref={ref} tabIndex={-1}>
        <header>
          <h2>{props.title}</h2>
          <button type="button" class="icon-btn modal-x" aria-label="Close" onClick={props.onClose}>
            <Icon name="x" />
          </button>
        </header>
        <div class="modal-body">{props.children}</div>
        {props.footer && <footer>{props.footer}</footer>}
      </div>
    </div>
  );
}

// ---- confirm -------------------------------------------------------------------

interface ConfirmReq {
  title: string;
  message: string;
  confirm: string;
  danger?: boolean;
  resolve: (ok: boolean) => void;
}
let setConfirmReq: ((r: ConfirmReq | null) => void) | null = null;

/** Asks before a destructive action (unless Settings turned it off). */
export function confirm(title: string, message: string, confirmLabel = 'Delete', danger = true): Promise<boolean> {
  if (store.get().settings?.confirmDeletes === false && danger) return Promise.resolve(true);
  return new Promise((resolve) => setConfirmReq?.({ title, message, confirm: confirmLabel, danger, resolve }));
}

export function ConfirmHost() {
  const [req, setReq] = useState<ConfirmReq | null>(null);
  setConfirmReq = setReq;
  if (!req) return null;
  const done = (ok: boolean) => {
    req.resolve(ok);
    setReq(null);
  };
  return (
    <Modal
      title={req.title}
      onClose={() => done(false)}
      footer={
        <>
          <button type="button" onClick={() => done(false)}>
            Cancel
          </button>
          <button type="button" class={req.danger ? 'danger' : 'primary'} onClick={() => done(true)}>
            {req.confirm}
          </button>
        </>
      }
    >
      <p>{req.message}</p>
    </Modal>
  );
}

// ---- toasts -------------------------------------------------------------------

export function Toasts() {
  const toasts = useStore((s) => s.toasts);
  return (
    <div class="toasts" aria-live="polite">
      {toasts.map((t) => (
        <div key={t.id} class={`toast ${t.kind}`} role={t.kind === 'error' ? 'alert' : 'status'}>
          <div class="toast-text">
            <strong>{t.title}</strong>
            {t.message && <p>{t.message}</p>}
          </div>
          {t.action && (
            <button
              type="button"
              class="danger small"
              onClick={() => {
                dismiss(t.id);
                t.action!.run();
              }}
            >
              {t.action.label}
            </button>
          )}
          <button type="button" class="icon-btn" aria-label="Dismiss" onClick={() => dismiss(t.id)}>
            <Icon name="x" />
          </button>
        </div>
      ))}
    </div>
  );
}

// ---- chart ---------------------------------------------------------------------

export interface ChartSeries {
  label: string;
  values: number[];
  cls: string;
}

/** A small SVG line chart (no library): fixed number of slots, newest right. */
export function Chart(props: { title: string; series: ChartSeries[]; slots?: number; format: (v: number) => string; max?: number; current?: string }) {
  const slots = props.slots ?? 120;
  const W = 300;
  const H = 90;
  const all = props.series.flatMap((s) => s.values.slice(-slots));
  const max = props.max ?? niceMax(Math.max(0, ...all));
  const path = (vals: number[]) => {
    const v = vals.slice(-slots);
    const off = slots - v.length;
    return v.map((y, i) => `${(((off + i) / (slots - 1)) * W).toFixed(1)},${(H - (Math.min(y, max) / max) * H).toFixed(1)}`).join(' ');
  };
  return (
    <figure class="chart" aria-label={`${props.title}: ${props.current ?? ''}`}>
      <figcaption>
        <span>{props.title}</span>
        <span class="chart-now">{props.current}</span>
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} preserveAspectRatio="none" role="img" aria-hidden="true">
        <line x1="0" y1={H / 2} x2={W} y2={H / 2} class="grid" />
        {props.series.map((s) => (
          <polyline key={s.label} points={path(s.values)} class={`line ${s.cls}`} fill="none" vector-effect="non-scaling-stroke" />
        ))}
      </svg>
      <div class="chart-legend">
        <span class="chart-max">max {props.format(max)}</span>
        {props.series.length > 1 &&
          props.series.map((s) => (
            <span key={s.label} class={`legend ${s.cls}`}>
              {s.label}
            </span>
          ))}
      </div>
    </figure>
  );
}

export function Tabs(props: { tabs: { id: string; label: string }[]; current: string; onSelect: (id: string) => void }) {
  const onKey = (e: KeyboardEvent) => {
    const i = props.tabs.findIndex((t) => t.id === props.current);
    let j = -1;
    if (e.key === 'ArrowRight') j = (i + 1) % props.tabs.length;
    if (e.key === 'ArrowLeft') j = (i - 1 + props.tabs.length) % props.tabs.length;
    if (j >= 0) {
      e.preventDefault();
      props.onSelect(props.tabs[j].id);
      setTimeout(() => (document.getElementById(`tab-${props.tabs[j].id}`) as HTMLElement | null)?.focus(), 0);
    }
  };
  return (
    <div class="tabs" role="tablist" onKeyDown={onKey}>
      {props.tabs.map((t) => (
        <button
          type="button"
          role="tab"
          id={`tab-${t.id}`}
          key={t.id}
          aria-selected={t.id === props.current}
          tabIndex={t.id === props.current ? 0 : -1}
          class={t.id === props.current ? 'active' : ''}
          onClick={() => props.onSelect(t.id)}
        >
          {t.label}
        </button>
      ))}
    </div>
  );
}
