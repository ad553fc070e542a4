// The chat page itself: two people in the same room see each other's messages, and the page
// shows the transport in use.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, startNode } from '../harness.js';

let node;
let browser;
before(async () => {
  node = await startNode();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await node?.stop();
});

async function join(name, transport) {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${node.base}/`);
  await page.fill('#room', 'e2e-room');
  await page.fill('#name', name);
  await page.selectOption('#transport', transport);
  await page.click('#connect');
  await page.waitForSelector('#message:not([disabled])', { timeout: 10_000 });
  return page;
}

test('two pages in one room exchange messages; the transport in use is shown', async () => {
  const alice = await join('alice', 'websocket');
  const bob = await join('bob', 'long-polling');
  try {
    assert.equal(await alice.textContent('#transport-in-use'), 'websocket');
    assert.equal(await bob.textContent('#transport-in-use'), 'long-polling');
    await alice.fill('#message', 'hello | bob ü€😀');
    await alice.click('#send-button');
    for (const page of [alice, bob]) {
      await page.waitForSelector('#log li.message', { timeout: 10_000 });
      assert.equal(await page.textContent('#log li.message'), 'alice: hello | bob ü€😀');
    }
  } finally {
    await alice.context().close();
    await bob.context().close();
  }
});
