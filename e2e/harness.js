// Test harness: a real Nimbus node and the real atmosphere.js in headless Chromium.
//
// Playwright gives every launch a fresh, empty profile.
//
// `startNode(flags)` runs target/release/nimbus on a free loopback port; `openClient(...)`
// opens a page served same-origin by the node (via request interception) that loads the node's
// /_nimbus/atmosphere.js and subscribes with the given options, recording every message and
// lifecycle event so tests can assert what a user of the client would see.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const NIMBUS = process.env.NIMBUS_BIN || join(root, 'target/release/nimbus');

/** Messages that exercise the framing: delimiters, quotes, newlines, non-BMP characters. */
export const TRICKY = [
  'plain',
  'with|pipes|and 12|fake frames',
  '"quoted" \'single\' {"json":true}',
  'two\nlines',
  'ü€😀 non-BMP',
  'XX',
];

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

/** Start a node; resolves once /healthz answers. */
export async function startNode(flags = []) {
  const port = await freePort();
  const child = spawn(NIMBUS, ['--bind', `127.0.0.1:${port}`, '--node-id', 'e2e', '--web-dir', join(root, 'web'), ...flags], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) break;
    } catch { /* not up yet */ }
    if (Date.now() > deadline) throw new Error(`nimbus did not start: ${stderr}`);
    await sleep(50);
  }
  return {
    base,
    port,
    async stats() { return (await fetch(`${base}/_nimbus/stats`)).json(); },
    /** Publish `text` to `topic` as a POST, the way an HTTP-transport client sends. */
    async publish(topic, text) {
      const q = 'X-Atmosphere-tracking-id=e2e-publisher&X-Atmosphere-Framework=5.0.7&X-Atmosphere-Transport=long-polling';
      const r = await fetch(`${base}${topic}?${q}`, { method: 'POST', body: text, headers: { 'Content-Type': 'text/plain' } });
      if (!r.ok) throw new Error(`publish failed: ${r.status} ${await r.text()}`);
    },
    async dropTransports() {
      const r = await fetch(`${base}/_nimbus/admin/drop-transports`, { method: 'POST' });
      if (!r.ok) throw new Error(`drop failed: ${r.status}`);
    },
    async stop() {
      child.kill('SIGKILL');
      await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
    },
  };
}

/**
 * Start the local cluster of scripts/cluster.sh (Redis, three nodes, HAProxy round-robin with
 * deploy/haproxy.cfg); `base` is the balancer. Resolves once the balancer answers.
 */
export async function startCluster(flags = [], attempt = 1) {
  // Below the kernel's ephemeral range (32768-60999 here): a port in it may be the local port of
  // any outgoing connection of the moment, and the balancer then cannot bind it.
  const port = 20000 + Math.floor(Math.random() * 1200) * 10;
  const dir = join(root, 'target', `e2e-cluster-${port}`);
  const script = join(root, 'scripts', 'cluster.sh');
  const env = {
    ...process.env,
    NIMBUS_BIN: NIMBUS,
    NIMBUS_ARGS: ['--web-dir', join(root, 'web'), ...flags].join(' '),
    RUST_LOG: process.env.RUST_LOG || 'warn',
  };
  const run = (...args) => new Promise((resolve, reject) => {
    const child = spawn(script, [...args, '--dir', dir], { env, stdio: ['ignore', 'ignore', 'inherit'] });
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`cluster.sh ${args[0]}: ${code}`))));
  });
  try {
    await run('up', '--port', String(port));
  } catch (error) {
    // What did start (Redis, nodes) goes; another port block is tried, twice at most.
    await run('down').catch(() => {});
    if (attempt >= 3) throw error;
    return startCluster(flags, attempt + 1);
  }
  const base = `http://127.0.0.1:${port}`;
  return {
    base,
    port,
    node: (n) => `http://127.0.0.1:${port + n}`,
    async publish(topic, text) {
      const q = 'X-Atmosphere-tracking-id=e2e-publisher&X-Atmosphere-Framework=5.0.7&X-Atmosphere-Transport=long-polling';
      const r = await fetch(`${base}${topic}?${q}`, { method: 'POST', body: text, headers: { 'Content-Type': 'text/plain' } });
      if (r.status !== 200) throw new Error(`publish failed: ${r.status} ${await r.text()}`);
    },
    /** `kill -9` node `n` (1..3). */
    kill: (n) => run('kill-node', String(n)),
    stop: () => run('down'),
  };
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `check` until it returns a truthy value or `ms` passes (then throw with `what`). */
export async function waitFor(what, check, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-features=LocalNetworkAccessChecks',
    ],
    headless: true,
  });
}

const CLIENT_PAGE = `<!doctype html><meta charset="utf-8"><script src="/_nimbus/atmosphere.js"></script>
<script>
  window.client = { messages: [], events: [], sub: null };
  window.connect = async (request) => {
    const c = window.client;
    c.sub = await new window.Atmosphere({ logLevel: 'silent' }).subscribe(request, {
      message: (r) => c.messages.push(r.responseBody),
      open: (r) => c.events.push('open:' + r.transport),
      reopen: () => c.events.push('reopen'),
      close: () => c.events.push('close'),
      reconnect: () => c.events.push('reconnect'),
      transportFailure: () => c.events.push('transportFailure'),
      error: (e) => c.events.push('error:' + (e && e.message)),
      authExpired: () => c.events.push('authExpired'),
    });
    return true;
  };
</script>`;

/**
 * One atmosphere.js client in its own browser context (its own connection pool, as a separate
 * browser tab of another user would have), subscribed to `topic` with `options`.
 */
export async function openClient(browser, node, topic, options) {
  const context = await browser.newContext();
  const page = await context.newPage();
  // Which node answered each request (`X-Nimbus-Node`), in order.
  const nodes = [];
  page.on('response', (response) => {
    const node = response.headers()['x-nimbus-node'];
    if (node && response.url().includes('X-Atmosphere-Transport')) nodes.push(node);
  });
  await page.route(`${node.base}/__e2e__/client.html`, (route) =>
    route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: CLIENT_PAGE }));
  await page.goto(`${node.base}/__e2e__/client.html`);
  await page.evaluate((request) => window.connect(request), {
    url: `${node.base}${topic}`,
    enableProtocol: true,
    reconnect: false,
    ...options,
  });
  return {
    page,
    messages: () => page.evaluate(() => window.client.messages.slice()),
    events: () => page.evaluate(() => window.client.events.slice()),
    push: (text) => page.evaluate((t) => window.client.sub.push(t), text),
    nodes: () => nodes.slice(),
    close: () => context.close(),
  };
}

/** Wait until `client` has received at least `count` messages; returns them. */
export async function messagesOf(client, count, ms = 10_000) {
  return waitFor(`${count} messages`, async () => {
    const m = await client.messages();
    return m.length >= count ? m : null;
  }, ms);
}
