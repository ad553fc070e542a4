// A WebSocket refused because the node already holds --max-websockets sockets (503 +
// Retry-After) falls back to long-polling (`fallbackTransport`); the socket that is open keeps
// receiving.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, messagesOf, openClient, startNode, waitFor } from '../harness.js';

let node;
let browser;
before(async () => {
  node = await startNode(['--max-websockets', '1']);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await node?.stop();
});

test('a websocket beyond --max-websockets falls back to long-polling and both clients get every message', async () => {
  const topic = '/e2e/websocket-limit';
  const options = { transport: 'websocket', fallbackTransport: 'long-polling', trackMessageLength: true };
  const first = await openClient(browser, node, topic, options);
  let second;
  try {
    await waitFor('first socket open', async () => (await first.events()).includes('open:websocket'));
    second = await openClient(browser, node, topic, options);
    const events = await waitFor('fallback open', async () => {
      const e = await second.events();
      return e.includes('open:long-polling') ? e : null;
    });
    assert.ok(events.includes('transportFailure'), `events: ${events}`);
    assert.ok(!events.includes('open:websocket'), `events: ${events}`);
    assert.equal((await node.stats()).websockets_open, 1, 'the refused socket was never counted');
    await node.publish(topic, 'one');
    await node.publish(topic, 'two|three');
    for (const c of [first, second]) {
      assert.deepEqual(await messagesOf(c, 2), ['one', 'two|three']);
    }
  } finally {
    await second?.close();
    await first.close();
  }
});
