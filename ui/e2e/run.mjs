// End-to-end tests of ui/ in Debian's chromium (playwright-core), against a
// real berthd through `berth-desktop --serve-ui` (the same commands the Tauri
// app uses).  Started by tests/test_gui.py, which provides:
//   BERTH_UI_URL      http://127.0.0.1:PORT/?token=...
//   DOCKER_HOST       the engine (the docker CLI plays "another client")
//   BERTH_REGISTRY    127.0.0.1:PORT of the test registry (berthd mirrors docker.io to it)
//   BERTH_SCREENSHOTS where to save the pictures (default docs/screenshots)
//   BERTH_E2E_ONLY    run only the tests whose name contains this
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const URL0 = process.env.BERTH_UI_URL;
const SHOTS = process.env.BERTH_SCREENSHOTS || path.join(HERE, '..', '..', 'docs', 'screenshots');
const DOCKER = process.env.DOCKER_CLI || '/usr/local/bin/docker';
const ONLY = process.env.BERTH_E2E_ONLY || '';
if (!URL0) {
  console.error('BERTH_UI_URL is not set (run tests/test_gui.py)');
  process.exit(2);
}
mkdirSync(SHOTS, { recursive: true });
const base = URL0.split('#')[0];

function docker(...args) {
  return execFileSync(DOCKER, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 }).trim();
}
function dockerFails(...args) {
  try {
    docker(...args);
    return null;
  } catch (e) {
    return String(e.stderr || e.message);
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'light', permissions: ['clipboard-read', 'clipboard-write'] });
const page = await context.newPage();
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(e.message));
page.on('console', (m) => m.type() === 'error' && pageErrors.push('console: ' + m.text()));

async function go(hash) {
  await page.goto(`${base}${hash}`);
}
async function shot(name) {
  await page.waitForTimeout(250);
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
}
const row = (name) => page.locator(`table.containers tr[data-name="${name}"]`);
const expectVisible = (loc, timeout = 15_000) => loc.first().waitFor({ state: 'visible', timeout });
async function until(fn, what, timeout = 15_000) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try {
      if (await fn()) return;
    } catch (e) {
      last = e;
    }
    await page.waitForTimeout(150);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

const results = [];
async function test(name, fn) {
  if (ONLY && !name.includes(ONLY)) return;
  const t0 = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    results.push({ name, ok: false });
    console.log(`FAIL ${name}: ${e.stack || e}`);
    await page.screenshot({ path: path.join(SHOTS, `FAILED-${name.replace(/\W+/g, '-')}.png`) }).catch(() => {});
  }
}

// ---- the tests --------------------------------------------------------------------------

await test('first paint shows the engine and the list', async () => {
  const t0 = Date.now();
  await go('#/containers');
  await expectVisible(page.getByRole('heading', { name: 'Containers' }));
  await expectVisible(page.getByText('Engine running'));
  console.log(`     first paint of the containers view: ${Date.now() - t0} ms`);
});

await test('list updates when a container starts from the CLI', async () => {
  await go('#/containers');
  await expectVisible(page.getByText('No containers yet').or(page.locator('table.containers')));
  docker('run', '-d', '--name', 'e2e-web', '-p', '127.0.0.1::80', 'busybox', 'httpd', '-f', '-p', '80');
  // No reload: the /events stream brings it.
  await expectVisible(row('e2e-web').locator('[data-state="running"]'));
  const port = docker('port', 'e2e-web', '80/tcp').split(':').pop();
  await expectVisible(row('e2e-web').locator(`a.port[href="http://127.0.0.1:${port}"]`));
  // A compose project, a stopped container and a logger, for the pictures and the next tests.
  for (const svc of ['api', 'db']) {
    docker('run', '-d', '--stop-timeout', '1', '--name', `shop-${svc}-1`, '--label', 'com.docker.compose.project=shop', '--label', `com.docker.compose.service=${svc}`, 'busybox', 'sleep', '3600');
  }
  docker('run', '--name', 'e2e-once', 'busybox', 'echo', 'done');
  docker('run', '-d', '--name', 'e2e-logger', 'busybox', 'sh', '-c', 'i=0; while true; do i=$((i+1)); echo "tick $i"; if [ $((i % 5)) = 0 ]; then echo "warning $i" >&2; fi; sleep 0.3; done');
  await expectVisible(page.locator('tbody[data-project="shop"] tr[data-name="shop-db-1"]'));
  await expectVisible(row('e2e-once').locator('[data-state="exited"]'));
  await expectVisible(row('e2e-logger'));
  // Live CPU/memory arrive within one stats round.
  await until(async () => (await row('e2e-logger').locator('td.num').nth(1).innerText()).includes('B'), 'memory column');
  await shot('containers');
});

await test('search and filter the list', async () => {
  await page.getByLabel('Search containers').fill('shop');
  await until(async () => (await page.locator('table.containers tbody tr[data-name]').count()) === 2, 'two shop containers');
  await page.getByLabel('Search containers').fill('');
  await page.getByLabel('Show').selectOption('stopped');
  await until(async () => (await page.locator('table.containers tbody tr[data-name]').count()) === 1, 'one stopped container');
  await page.getByLabel('Show').selectOption('all');
});

await test('stop from the GUI', async () => {
  await go('#/containers');
  await row('e2e-web').getByRole('button', { name: 'Stop e2e-web', exact: true }).click();
  await expectVisible(row('e2e-web').locator('[data-state="exited"]'), 20_000);
  const running = docker('inspect', '-f', '{{.State.Running}}', 'e2e-web');
  if (running !== 'false') throw new Error(`docker says running=${running}`);
  // And start it again.
  await row('e2e-web').getByRole('button', { name: 'Start e2e-web', exact: true }).click();
  await expectVisible(row('e2e-web').locator('[data-state="running"]'), 20_000);
});

await test('bulk selection stops several containers', async () => {
  await row('shop-api-1').getByRole('checkbox').check();
  await row('shop-db-1').getByRole('checkbox').check();
  await page.getByRole('toolbar', { name: 'Selected containers' }).getByRole('button', { name: 'Stop' }).click();
  await expectVisible(row('shop-api-1').locator('[data-state="exited"]'), 20_000);
  await expectVisible(row('shop-db-1').locator('[data-state="exited"]'), 20_000);
  await page.getByRole('button', { name: 'Clear selection' }).click();
  docker('start', 'shop-api-1', 'shop-db-1');
  await expectVisible(row('shop-db-1').locator('[data-state="running"]'));
});

const loggerId = () => docker('inspect', '-f', '{{.Id}}', 'e2e-logger');

await test('logs follow and search', async () => {
  await go(`#/containers/${loggerId()}/logs`);
  await expectVisible(page.locator('.log-line', { hasText: /^tick 3$/ }));
  // Following: lines written after the page opened show up.
  const n0 = Number(docker('logs', 'e2e-logger').split('\n').filter((l) => l.startsWith('tick')).pop().split(' ')[1]);
  await expectVisible(page.locator('.log-line', { hasText: new RegExp(`^tick ${n0 + 3}$`) }), 15_000);
  await expectVisible(page.locator('.log-line.stderr', { hasText: 'warning 5' }));
  await page.getByLabel('Search the logs').fill('warning');
  await expectVisible(page.locator('.log-line mark', { hasText: 'warning' }));
  await until(async () => /^\d+\/\d+$/.test(await page.locator('.match-count').innerText()), 'match count');
  await page.getByRole('button', { name: 'Next match' }).click();
  await shot('container-logs');
  await page.getByLabel('Search the logs').fill('');
});

await test('inspect shows readable sections and raw JSON', async () => {
  await page.getByRole('tab', { name: 'Inspect' }).click();
  await expectVisible(page.getByRole('heading', { name: 'Environment' }));
  await expectVisible(page.locator('td', { hasText: 'PATH' }));
  await shot('container-inspect');
  await page.getByLabel('Raw JSON').check();
  await expectVisible(page.locator('pre.json', { hasText: '"Id"' }));
});

await test('exec a command in the terminal and see its output', async () => {
  await go(`#/containers/${loggerId()}/terminal`);
  await page.getByRole('button', { name: 'Connect' }).click();
  await expectVisible(page.getByText('connected: sh'));
  await page.waitForTimeout(300);
  await page.locator('.term .xterm').click();
  await page.keyboard.type('echo berth-$((6*7)) && hostname\n');
  await until(async () => (await page.locator('.term .xterm-rows').innerText()).includes('berth-42'), 'berth-42 in the terminal');
  await shot('container-terminal');
  await page.keyboard.type('exit\n');
  await expectVisible(page.getByText(/session ended/));
});

await test('stats graphs', async () => {
  await go(`#/containers/${loggerId()}/stats`);
  await until(async () => {
    const t = await page.getByText(/samples, one a second/).innerText();
    return parseInt(t, 10) >= 4;
  }, '4 samples', 20_000);
  await expectVisible(page.locator('figure.chart', { hasText: 'Memory' }));
  await shot('container-stats');
});

await test('pull with per-layer progress', async () => {
  await go('#/images');
  await page.getByLabel('Image to pull').fill('berth-test/multilayer:latest');
  await page.getByRole('button', { name: 'Pull' }).click();
  const panel = page.locator('.progress-panel[data-ref="berth-test/multilayer:latest"]');
  await expectVisible(panel);
  await expectVisible(panel.getByText('Pulled berth-test/multilayer:latest'), 60_000);
  const layers = await panel.locator('ul.layers li').count();
  if (layers < 2) throw new Error(`expected the layers of the image, got ${layers}`);
  const done = await panel.locator('ul.layers li[data-phase="done"], ul.layers li[data-phase="exists"]').count();
  if (done !== layers) throw new Error(`${done}/${layers} layers complete`);
  await expectVisible(page.locator('table.images tr[data-ref="berth-test/multilayer:latest"]'));
  await shot('images-pull');
});

await test('a failed pull is shown in words', async () => {
  await page.getByLabel('Image to pull').fill('berth-test/does-not-exist:nope');
  await page.getByRole('button', { name: 'Pull' }).click();
  const panel = page.locator('.progress-panel[data-ref="berth-test/does-not-exist:nope"]');
  await expectVisible(panel.getByText(/failed/));
  const msg = await panel.locator('.error-text').innerText();
  if (msg.length < 5) throw new Error(`no error message: ${msg}`);
});

await test('delete an image in use shows the conflict', async () => {
  await go('#/images');
  await page.getByRole('button', { name: 'Delete busybox:latest' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
  const toastEl = page.locator('.toast.error');
  await expectVisible(toastEl);
  const text = await toastEl.innerText();
  if (!/conflict|in use|being used/i.test(text)) throw new Error(`unexpected error text: ${text}`);
  await expectVisible(toastEl.getByRole('button', { name: 'Force delete' }));
  await shot('images-conflict');
  await toastEl.getByRole('button', { name: 'Dismiss' }).click();
  if (!docker('image', 'ls', '-q', 'busybox:latest')) throw new Error('busybox was deleted');
});

await test('run dialog starts a container', async () => {
  await go('#/images');
  await page.getByRole('button', { name: 'Run busybox:latest' }).click();
  const dlg = page.getByRole('dialog', { name: 'Run busybox:latest' });
  await dlg.getByLabel('Name').fill('e2e-run');
  await dlg.getByLabel('Command').fill("sh -c 'echo $GREETING; sleep 600'");
  await dlg.getByRole('button', { name: 'Add a port' }).click();
  await dlg.getByLabel('Container port 1').fill('8080');
  await dlg.getByLabel('Environment').fill('GREETING=hello from the run dialog');
  await dlg.getByLabel('Restart policy').selectOption('unless-stopped');
  await shot('images-run-dialog');
  await dlg.getByRole('button', { name: 'Run' }).click();
  await expectVisible(page.getByRole('heading', { name: /e2e-run/ }));
  await expectVisible(page.locator('.log-line', { hasText: 'hello from the run dialog' }));
  const policy = docker('inspect', '-f', '{{.HostConfig.RestartPolicy.Name}}', 'e2e-run');
  if (policy !== 'unless-stopped') throw new Error(`restart policy ${policy}`);
});

await test('volumes: in use, browse, delete conflict', async () => {
  docker('volume', 'create', 'e2e-data');
  docker('run', '-d', '--name', 'e2e-vol', '-v', 'e2e-data:/data', 'busybox', 'sh', '-c', 'mkdir -p /data/sub && echo hi > /data/hello.txt && sleep 600');
  await go('#/volumes');
  const r = page.locator('table.volumes tr[data-name="e2e-data"]');
  await expectVisible(r.locator('.badge', { hasText: 'e2e-vol' }));
  await shot('volumes');
  await r.getByRole('button', { name: 'Browse e2e-data' }).click();
  await expectVisible(page.getByRole('dialog').getByText('hello.txt'));
  await shot('volumes-browse');
  await page.getByRole('dialog').getByRole('button', { name: 'Close' }).click();
  await r.getByRole('button', { name: 'Delete e2e-data' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
  const toastEl = page.locator('.toast.error');
  await expectVisible(toastEl);
  if (!/in use|conflict/i.test(await toastEl.innerText())) throw new Error(await toastEl.innerText());
  await toastEl.getByRole('button', { name: 'Dismiss' }).click();
});

await test('networks: create from the GUI', async () => {
  await go('#/networks');
  await page.getByRole('button', { name: 'Create' }).click();
  const dlg = page.getByRole('dialog', { name: 'Create a network' });
  await dlg.getByLabel('Name').fill('e2e-net');
  await dlg.getByRole('button', { name: 'Create' }).click();
  await expectVisible(page.locator('table.networks tr[data-name="e2e-net"]'));
  docker('network', 'inspect', 'e2e-net');
  await shot('networks');
});

await test('settings and troubleshoot', async () => {
  await go('#/settings');
  await expectVisible(page.getByRole('heading', { name: 'Engine', exact: true }));
  await expectVisible(page.getByText(/API 1\.44/));
  await shot('settings');
  await go('#/troubleshoot');
  await expectVisible(page.getByRole('heading', { name: 'Clean up' }));
  await shot('troubleshoot');
});

await test('dark theme', async () => {
  await page.emulateMedia({ colorScheme: 'dark' });
  await go('#/containers');
  await expectVisible(row('e2e-logger'));
  await shot('containers-dark');
  await go(`#/containers/${loggerId()}/stats`);
  await until(async () => parseInt(await page.getByText(/samples, one a second/).innerText(), 10) >= 3, 'samples');
  await shot('container-stats-dark');
  await page.emulateMedia({ colorScheme: 'light' });
});

await test('keyboard navigation', async () => {
  await go('#/containers');
  await page.keyboard.press('Alt+2');
  await expectVisible(page.getByRole('heading', { name: 'Images' }));
  await page.keyboard.press('/');
  const focused = await page.evaluate(() => document.activeElement?.getAttribute('aria-label'));
  if (focused !== 'Search images') throw new Error(`focus on ${focused}`);
  await page.keyboard.press('Alt+1');
  await expectVisible(page.getByRole('heading', { name: 'Containers' }));
});

await test('delete a container from the GUI', async () => {
  await go('#/containers');
  await row('e2e-once').getByRole('button', { name: 'Delete e2e-once' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
  await row('e2e-once').waitFor({ state: 'detached', timeout: 15_000 });
  if (!dockerFails('inspect', 'e2e-once')) throw new Error('e2e-once still exists');
});

await test('reconnects when the engine restarts', async () => {
  const control = process.env.BERTH_E2E_CONTROL;
  if (!control) {
    console.log('     (skipped: no BERTH_E2E_CONTROL to stop and start the engine)');
    return;
  }
  await go('#/containers');
  await expectVisible(row('e2e-logger'));
  await fetch(`${control}/kill`, { method: 'POST' });
  const banner = page.getByRole('alert').filter({ hasText: 'The engine is not running' });
  await expectVisible(banner);
  await expectVisible(page.getByText('Engine stopped'));
  await shot('engine-stopped');
  await fetch(`${control}/start`, { method: 'POST' });
  await banner.waitFor({ state: 'detached', timeout: 20_000 });
  await expectVisible(page.getByText('Engine running'));
  // Events flow again: a container started now shows up without a reload.
  docker('run', '-d', '--name', 'e2e-after-restart', 'busybox', 'sleep', '600');
  await expectVisible(row('e2e-after-restart').locator('[data-state="running"]'));
});

await browser.close();
const failed = results.filter((r) => !r.ok);
const seriousErrors = pageErrors.filter((e) => !/favicon|ResizeObserver/.test(e));
if (seriousErrors.length) console.log('page errors:\n  ' + seriousErrors.join('\n  '));
console.log(`\n${results.length - failed.length}/${results.length} passed; screenshots in ${SHOTS}`);
process.exit(failed.length ? 1 : 0);
