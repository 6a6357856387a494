import { afterEach, describe, expect, it } from 'vitest';
import { render } from 'preact';
import { act } from 'preact/test-utils';
import { lazyView } from '../src/lazy';

async function settle() {
  for (let i = 0; i < 3; i++) await act(async () => new Promise((r) => setTimeout(r, 0)));
}

describe('lazyView', () => {
  const root = document.createElement('div');
  afterEach(() => render(null, root));

  it('imports the module once, when first shown, and passes the props', async () => {
    let loads = 0;
    const View = lazyView(async () => {
      loads++;
      return ({ who }: { who: string }) => <p>hello {who}</p>;
    });
    expect(loads).toBe(0); // defining it loads nothing
    render(<View who="a" />, root);
    expect(root.querySelector('[aria-busy="true"]')).not.toBeNull();
    await settle();
    expect(root.textContent).toBe('hello a');
    render(null, root);
    render(<View who="b" />, root); // shown again: at once, no second import
    expect(root.textContent).toBe('hello b');
    expect(loads).toBe(1);
  });

  it('shows a failed import in words and tries again next time', async () => {
    let fail = true;
    const View = lazyView(async () => {
      if (fail) throw new Error('chunk missing');
      return () => <p>ok</p>;
    });
    render(<View />, root);
    await settle();
    expect(root.querySelector('[role="alert"]')?.textContent).toContain('chunk missing');
    render(null, root);
    fail = false;
    render(<View />, root);
    await settle();
    expect(root.textContent).toBe('ok');
  });
});
