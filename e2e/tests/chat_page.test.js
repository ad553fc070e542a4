// The chat page as people use it, with the real atmosphere.js in Chromium: guests sign in with
// a name, see who is online as others come and go, get the room's last messages on entry, and
// read names and times on messages, over different transports; once on one node, once through
// the local cluster (three nodes behind HAProxy, no stickiness). A screenshot of two signed-in
// users is written to docs/chat-page.png.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { launchBrowser, startCluster, startNode, waitFor } from '../harness.js';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

async function enter(base, name, transport, room = 'e2e-room') {
  const page = await (await browser.newContext({ viewport: { width: 1100, height: 720 } })).newPage();
  await page.goto(`${base}/`);
  await page.fill('#name', name);
  await page.fill('#room', room);
  await page.selectOption('#transport', transport);
  await page.click('#connect');
  await page.waitForSelector('#message:not([disabled])', { timeout: 15_000 });
  return page;
}

const online = (page) => page.$$eval('#online li', (lis) => lis.map((li) => li.textContent));
const messages = (page) => page.$$eval('#log li.message', (lis) => lis.map((li) => ({
  author: li.querySelector('.author').textContent,
  text: li.querySelector('.text').textContent,
  time: li.querySelector('time').textContent,
})));

async function onlineIs(page, names, ms = 15_000) {
  await waitFor(`${names.join(', ')} online`, async () => JSON.stringify(await online(page)) === JSON.stringify(names), ms);
}

async function say(page, text) {
  await page.fill('#message', text);
  await page.click('#send-button');
}

async function conversation(base, { screenshot } = {}) {
  const alice = await enter(base, 'alice', 'websocket');
  const bob = await enter(base, 'bob', 'long-polling');
  try {
    assert.equal(await alice.textContent('#transport-in-use'), 'websocket');
    assert.equal(await bob.textContent('#transport-in-use'), 'long-polling');
    assert.equal(await alice.textContent('#signed-in'), 'alice');
    await onlineIs(alice, ['alice', 'bob']);
    await onlineIs(bob, ['alice', 'bob']);

    // Alice on her WebSocket, bob over long-polling; then alice's burst (one connection, in
    // order whatever node each of bob's requests lands on).
    await say(alice, 'hello | bob ü€😀');
    await waitFor('alice\'s message at bob', async () => (await messages(bob)).length === 1);
    await say(bob, 'hi alice');
    await waitFor('bob\'s answer at alice', async () => (await messages(alice)).length === 2);
    for (let i = 1; i <= 21; i += 1) await say(alice, `message ${i}`);
    for (const page of [alice, bob]) {
      await waitFor('the conversation on both pages', async () => (await messages(page)).length === 23);
      const seen = await messages(page);
      assert.deepEqual(seen.slice(0, 2).map((m) => `${m.author}: ${m.text}`), ['alice: hello | bob ü€😀', 'bob: hi alice']);
      for (const m of seen) assert.match(m.time, /\d{1,2}.\d{2}/, 'a time on every message');
      assert.deepEqual(seen.slice(2).map((m) => `${m.author}: ${m.text}`),
        Array.from({ length: 21 }, (_, i) => `alice: message ${i + 1}`));
    }

    // Carol comes later, on SSE: the room's last 20 messages, then the live ones; she is
    // listed, and everyone sees her.
    const carol = await enter(base, 'carol', 'sse');
    try {
      await waitFor('the last 20 messages for carol', async () => (await messages(carol)).length === 20);
      assert.deepEqual((await messages(carol)).map((m) => m.text),
        Array.from({ length: 20 }, (_, i) => `message ${i + 2}`));
      await onlineIs(carol, ['alice', 'bob', 'carol']);
      await onlineIs(alice, ['alice', 'bob', 'carol']);
      await onlineIs(bob, ['alice', 'bob', 'carol']);
      await say(carol, 'hi all');
      for (const page of [alice, carol]) {
        await waitFor('carol\'s message, with her name', async () => {
          const last = (await messages(page)).at(-1);
          return last?.text === 'hi all' && last.author === 'carol';
        });
      }
      if (screenshot) await alice.screenshot({ path: screenshot });
      const rooms = await carol.$$eval('#rooms li', (lis) => lis.map((li) => li.textContent));
      assert.ok(rooms.some((r) => r.startsWith('# e2e-room')), `${rooms}`);
      await waitFor('the member count beside the room', async () => (await carol.$$eval('#rooms li.current .count', (c) => c[0]?.textContent)) === '3');
    } finally {
      await carol.context().close();
    }
    // Carol closed her page: she leaves (her reconnect window is short on these nodes).
    await onlineIs(alice, ['alice', 'bob'], 30_000);
    await onlineIs(bob, ['alice', 'bob'], 30_000);
  } finally {
    await alice.context().close();
    await bob.context().close();
  }
}

test('guests chat in a room on one node: presence, history on entry, names and times', async () => {
  const node = await startNode(['--reconnect-window-secs', '3', '--long-poll-expiry-secs', '5']);
  try {
    await conversation(node.base, { screenshot: join(import.meta.dirname, '..', '..', 'docs', 'chat-page.png') });
  } finally {
    await node.stop();
  }
});

test('the same through the local cluster, every request round-robin over three nodes', async () => {
  // Behind the balancer a client that vanished is noticed at the node's next write to it (a
  // heartbeat at the latest): HAProxy forwards the client's close only then.
  const cluster = await startCluster(['--reconnect-window-secs', '3', '--long-poll-expiry-secs', '5', '--heartbeat-secs', '5']);
  try {
    await conversation(cluster.base);
  } finally {
    await cluster.stop();
  }
});
