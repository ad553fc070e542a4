// Several real atmosphere.js clients per topic on each transport, with trackMessageLength on
// and off: every client receives every message exactly once, in order, byte-identical.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { TRICKY, launchBrowser, messagesOf, openClient, sleep, startNode, waitFor } from '../harness.js';

let node;
let browser;
before(async () => {
  node = await startNode(['--heartbeat-secs', '5']);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await node?.stop();
});

const CASES = [
  ['websocket', true], ['websocket', false],
  ['sse', true], ['sse', false],
  ['streaming', true], // atmosphere.js 5 needs trackMessageLength for streaming (chunks merge)
  ['long-polling', true], ['long-polling', false],
];

for (const [transport, trackMessageLength] of CASES) {
  test(`${transport}, trackMessageLength=${trackMessageLength}: 3 clients get every message once, in order`, async () => {
    const topic = `/e2e/${transport}-${trackMessageLength}`;
    const clients = [];
    for (let i = 0; i < 3; i++) {
      clients.push(await openClient(browser, node, topic, { transport, trackMessageLength }));
    }
    for (const c of clients) {
      await waitFor('open', async () => (await c.events()).includes(`open:${transport}`));
    }
    try {
      const published = TRICKY.map((m, i) => `${i}:${m}`);
      for (const m of published) await node.publish(topic, m);
      for (const c of clients) {
        assert.deepEqual(await messagesOf(c, published.length), published);
      }
      // What a client sends (a frame or a POST) reaches everyone, the sender included.
      await clients[1].push('from client 1 ü€😀');
      for (const c of clients) {
        const all = await messagesOf(c, published.length + 1);
        assert.deepEqual(all.slice(published.length), ['from client 1 ü€😀']);
      }
      await sleep(300);
      for (const c of clients) {
        assert.equal((await c.messages()).length, published.length + 1, 'no duplicates arrive later');
      }
    } finally {
      for (const c of clients) await c.close();
    }
  });
}
