// `reconnect: true` after the server drops every transport: messages broadcast while a client
// was away arrive once when it is back, and later messages keep flowing, none duplicated.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, messagesOf, openClient, sleep, startNode, waitFor } from '../harness.js';

let node;
let browser;
before(async () => {
  node = await startNode(['--admin', '--heartbeat-secs', '5', '--reconnect-window-secs', '30']);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await node?.stop();
});

for (const transport of ['websocket', 'sse', 'streaming', 'long-polling']) {
  test(`${transport}: clients reconnect after the server drops them and miss nothing`, async () => {
    const topic = `/e2e/reconnect-${transport}`;
    const clients = [];
    for (let i = 0; i < 2; i++) {
      clients.push(await openClient(browser, node, topic, {
        transport, trackMessageLength: true, reconnect: true, reconnectInterval: 500,
      }));
    }
    try {
      for (const c of clients) {
        await waitFor('open', async () => (await c.events()).includes(`open:${transport}`));
      }
      await node.publish(topic, 'before|drop');
      for (const c of clients) await messagesOf(c, 1);

      await node.dropTransports();
      // Published while the pushing transports are down (atmosphere.js waits ≥250 ms to reconnect).
      await node.publish(topic, 'while|down ü€😀');
      await node.publish(topic, 'still down');

      if (transport !== 'long-polling') {
        // A long-poller's dropped poll is simply answered; the others really reconnect.
        for (const c of clients) {
          await waitFor('reopen', async () => (await c.events()).includes('reopen'));
        }
      }
      await node.publish(topic, 'after|reopen');
      const expected = ['before|drop', 'while|down ü€😀', 'still down', 'after|reopen'];
      for (const c of clients) {
        assert.deepEqual(await messagesOf(c, expected.length), expected);
      }
      await sleep(500);
      for (const c of clients) {
        assert.deepEqual(await c.messages(), expected, 'nothing arrives twice');
      }
    } finally {
      for (const c of clients) await c.close();
    }
  });
}
