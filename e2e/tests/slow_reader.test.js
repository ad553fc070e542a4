// A reader that stops reading does not delay the other subscribers, and meets the stated
// policy: once it is more than --max-lag-messages behind, its transport is closed (1013) and
// counted; the real atmosphere.js clients on the same topic receive the whole burst.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import { launchBrowser, messagesOf, openClient, startNode, waitFor } from '../harness.js';

let node;
let browser;
before(async () => {
  node = await startNode(['--max-publishes-per-sec', '0', '--history-share-bytes', '0', '--max-lag-messages', '500', '--history-messages', '10000', '--history-bytes', '67108864']);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await node?.stop();
});

const QUERY = 'X-Atmosphere-tracking-id=0&X-Atmosphere-Framework=5.0.7&X-Atmosphere-Transport=websocket'
  + '&X-Atmosphere-TrackMessageSize=true&X-atmo-protocol=true';

function rawSocket(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('message', () => resolve(ws)); // the handshake
    ws.once('error', reject);
  });
}

test('a reader that stops reading is dropped; everyone else gets the burst promptly', async () => {
  const topic = '/e2e/slow';
  const readers = [];
  for (let i = 0; i < 2; i++) {
    readers.push(await openClient(browser, node, topic, { transport: 'websocket', trackMessageLength: true }));
  }
  for (const r of readers) await waitFor('open', async () => (await r.events()).includes('open:websocket'));

  const slow = await rawSocket(`ws://127.0.0.1:${node.port}${topic}?${QUERY}`);
  let slowClose = null;
  slow.on('close', (code) => { slowClose = code; });
  slow._socket.pause(); // stop reading: the kernel buffers fill, then the server's queue

  const publisher = await rawSocket(`ws://127.0.0.1:${node.port}${topic}?${QUERY}`);
  publisher.on('message', () => {}); // the publisher keeps reading (it is a subscriber too)
  // 3000 messages of 4 KB (12 MB) at about 2000 messages/s: more than the paused socket's
  // kernel buffers hold, and a pace the live readers sustain.
  const count = 3000;
  const pad = 'x'.repeat(4000);
  const started = Date.now();
  for (let i = 0; i < count; i++) {
    publisher.send(`${i}|${pad}`);
    if (i % 100 === 99) await new Promise((r) => setTimeout(r, 50));
  }

  for (const r of readers) {
    const got = await messagesOf(r, count, 30_000);
    assert.equal(got.length, count);
    got.forEach((m, i) => assert.equal(m, `${i}|${pad}`));
  }
  const elapsed = Date.now() - started;
  assert.ok(elapsed < 20_000, `burst took ${elapsed} ms`);

  const stats = await waitFor('slow consumer dropped', async () => {
    const s = await node.stats();
    return s.slow_consumers_dropped >= 1 ? s : null;
  });
  assert.equal(stats.slow_consumers_dropped, 1, 'only the slow reader was dropped');
  slow._socket.resume(); // read again: the close frame (1013) is behind the buffered data
  await waitFor('slow reader closed', () => slowClose !== null, 15_000);
  assert.equal(slowClose, 1013);
  publisher.close();
  for (const r of readers) await r.close();
});
