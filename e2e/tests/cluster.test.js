// The cluster without sticky sessions, with the real atmosphere.js: Redis, three nodes and
// HAProxy round-robin (scripts/cluster.sh, the docker-compose topology on loopback).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, messagesOf, openClient, sleep, startCluster, waitFor } from '../harness.js';

let cluster;
let browser;
before(async () => {
  cluster = await startCluster(['--heartbeat-secs', '10']);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await cluster?.stop();
});

test('long-polling clients behind the balancer get every message once, in order, from several nodes', async () => {
  const topic = '/e2e/cluster/long-polling';
  const clients = [];
  for (let i = 0; i < 3; i++) {
    clients.push(await openClient(browser, cluster, topic, { transport: 'long-polling', trackMessageLength: true }));
  }
  // A websocket and an SSE client too, each on whichever node the balancer picked.
  clients.push(await openClient(browser, cluster, topic, { transport: 'websocket', trackMessageLength: true }));
  clients.push(await openClient(browser, cluster, topic, { transport: 'sse', trackMessageLength: true }));
  try {
    for (const c of clients) {
      await waitFor('open', async () => (await c.events()).some((e) => e.startsWith('open:')));
    }
    const published = [];
    for (let i = 0; i < 120; i++) published.push(`${i}: ü€😀 a|b`);
    for (const m of published) await cluster.publish(topic, m);
    for (const c of clients) {
      assert.deepEqual(await messagesOf(c, published.length, 60_000), published);
    }
    await sleep(500);
    for (const c of clients.slice(0, 3)) {
      assert.equal((await c.messages()).length, published.length, 'no duplicates arrive later');
      const nodes = new Set(c.nodes());
      assert.ok(nodes.size >= 2, `polls were served by ${[...nodes]} only`);
    }
  } finally {
    for (const c of clients) await c.close();
  }
});
