// A WebSocket whose upgrade is refused falls back to long-polling (`fallbackTransport`).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, messagesOf, openClient, startNode, waitFor } from '../harness.js';

let node;
let browser;
before(async () => {
  node = await startNode(['--disable-websocket']);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await node?.stop();
});

test('a refused websocket upgrade falls back to long-polling and messages flow', async () => {
  const topic = '/e2e/fallback';
  const client = await openClient(browser, node, topic, {
    transport: 'websocket', fallbackTransport: 'long-polling', trackMessageLength: true,
  });
  const other = await openClient(browser, node, topic, { transport: 'sse', trackMessageLength: true });
  try {
    const events = await waitFor('fallback open', async () => {
      const e = await client.events();
      return e.includes('open:long-polling') ? e : null;
    });
    assert.ok(events.includes('transportFailure'), `events: ${events}`);
    assert.ok(!events.includes('open:websocket'), `events: ${events}`);
    await waitFor('sse open', async () => (await other.events()).includes('open:sse'));
    // push() returns once the browser has queued the POST, not once the server has it, so the
    // publish waits until the pushed message has come back: the order asserted below is then real.
    await client.push('sent over long-polling');
    await messagesOf(other, 1);
    await node.publish(topic, 'to|everyone');
    for (const c of [client, other]) {
      assert.deepEqual(await messagesOf(c, 2), ['sent over long-polling', 'to|everyone']);
    }
  } finally {
    await client.close();
    await other.close();
  }
});
