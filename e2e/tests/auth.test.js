// The real atmosphere.js 5 with its `authToken` option against a node that checks JSON Web
// Tokens, on all four transports: a valid token works both ways; a forged or expired one is
// refused (the client's subscribe fails); a WebSocket whose token expires mid-session closes.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, test } from 'node:test';
import { launchBrowser, messagesOf, openClient, startNode, waitFor } from '../harness.js';

const SECRET = 'e2e-secret';
let node;
let browser;
before(async () => {
  node = await startNode(['--jwt-hmac-secret', SECRET]);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await node?.stop();
});

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
function token(sub, expIn, secret = SECRET) {
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ sub, exp: Math.floor(Date.now() / 1000) + expIn });
  const signature = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${signature}`;
}

const TRANSPORTS = ['websocket', 'sse', 'streaming', 'long-polling'];

for (const transport of TRANSPORTS) {
  test(`${transport}: a valid authToken opens, sends and receives`, async () => {
    const topic = `/e2e/auth/${transport}`;
    const options = { transport, trackMessageLength: true };
    const alice = await openClient(browser, node, topic, { ...options, authToken: token('alice', 300) });
    const bob = await openClient(browser, node, topic, { ...options, authToken: token('bob', 300) });
    try {
      for (const c of [alice, bob]) {
        await waitFor('open', async () => (await c.events()).includes(`open:${transport}`));
      }
      await alice.push(`hello from alice over ${transport}`);
      for (const c of [alice, bob]) {
        assert.deepEqual(await messagesOf(c, 1), [`hello from alice over ${transport}`]);
      }
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  test(`${transport}: a forged or expired authToken is refused`, async () => {
    for (const bad of [token('mallory', 300, 'not-the-secret'), token('alice', -120)]) {
      let refused = false;
      let client;
      try {
        client = await openClient(browser, node, `/e2e/auth/no-${transport}`, {
          transport, trackMessageLength: true, authToken: bad,
        });
        // subscribe() resolves once the transport is open, and rejects when the first
        // connect fails: getting here means the node let the token in.
      } catch (error) {
        // The client's own words for a refused first connect (401), per transport.
        refused = /(WebSocket connection error|SSE connection failed|Streaming connection failed: 401|Long-polling connection failed)/
          .test(error.message);
        assert.ok(refused, `${transport}: unexpected failure ${error.message}`);
      } finally {
        await client?.close();
      }
      assert.ok(refused, `${transport} opened with a bad token`);
    }
  });
}

test('websocket: a connection whose token expires is closed by the node', async () => {
  const client = await openClient(browser, node, '/e2e/auth/expiring', {
    transport: 'websocket', trackMessageLength: true, authToken: token('carol', 1),
  });
  try {
    await waitFor('open', async () => (await client.events()).includes('open:websocket'));
    // The node takes a token 5 s past its exp, then closes the socket ("token expired").
    await waitFor('the close', async () => (await client.events()).includes('close'), 15_000);
  } finally {
    await client.close();
  }
});
