// JSON Web Tokens through the cluster without sticky sessions (Redis, three nodes, HAProxy
// round-robin; scripts/cluster.sh), with the real atmosphere.js 5 and its `authToken`: a valid
// token works both ways on all four transports; a forged or expired one is refused by every
// node; a WebSocket whose token expires is closed with a reason; and a tracking id issued to
// one user is refused to another on every node (the take-over probe), while its owner keeps it.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import { launchBrowser, messagesOf, openClient, startCluster, waitFor } from '../harness.js';

const SECRET = 'e2e-cluster-secret';
let cluster;
let browser;
before(async () => {
  cluster = await startCluster(['--jwt-hmac-secret', SECRET, '--heartbeat-secs', '10']);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await cluster?.stop();
});

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
function token(sub, expIn, secret = SECRET) {
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ sub, exp: Math.floor(Date.now() / 1000) + expIn });
  const signature = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${signature}`;
}

const TRANSPORTS = ['websocket', 'sse', 'streaming', 'long-polling'];

/** The balancer and, directly, each of the three nodes. */
const endpoints = () => [
  ['balancer', cluster.base],
  ['nimbus1', cluster.node(1)],
  ['nimbus2', cluster.node(2)],
  ['nimbus3', cluster.node(3)],
];

/** The query atmosphere.js 5 sends (tracking id, framework, transport, TML, protocol, auth). */
function atmoQuery(transport, trackingId, auth) {
  return `X-Atmosphere-tracking-id=${encodeURIComponent(trackingId)}&X-Atmosphere-Framework=5.0.7`
    + `&X-Atmosphere-Transport=${transport}&X-Atmosphere-TrackMessageSize=true&X-atmo-protocol=true`
    + `&X-Atmosphere-Auth=${encodeURIComponent(auth)}`;
}

/** Publish `text` to `topic` through the balancer as a plain POST with `user`'s token. */
async function publish(topic, text, user = 'publisher') {
  const r = await fetch(`${cluster.base}${topic}`, {
    method: 'POST',
    body: text,
    headers: { 'Content-Type': 'text/plain', 'X-Atmosphere-Auth': token(user, 300) },
    signal: AbortSignal.timeout(10_000),
  });
  assert.equal(r.status, 200, `publish: ${r.status} ${await r.text()}`);
}

/** A raw GET with the atmosphere.js query; never held longer than 10 s. */
async function rawGet(url) {
  const r = await fetch(url, {
    headers: { 'Content-Type': 'text/plain' },
    signal: AbortSignal.timeout(10_000),
  });
  return { status: r.status, headers: r.headers, body: await r.text() };
}

/** The status a WebSocket upgrade gets (101 when it opens). */
function upgradeStatus(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace(/^http/, 'ws'));
    const timer = setTimeout(() => { ws.terminate(); reject(new Error(`no answer from ${url}`)); }, 10_000);
    ws.on('open', () => { clearTimeout(timer); ws.terminate(); resolve(101); });
    ws.on('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      const headers = res.headers;
      res.resume();
      ws.terminate();
      resolve({ status: res.statusCode, headers });
    });
    ws.on('error', (error) => { clearTimeout(timer); reject(error); });
  });
}

/** Close the browser contexts a failed openClient() left behind (it throws before returning). */
async function closeContextsExcept(known) {
  for (const context of browser.contexts()) if (!known.has(context)) await context.close();
}

for (const transport of TRANSPORTS) {
  test(`${transport} through the balancer: valid authTokens open, send and receive both ways`, async () => {
    const topic = `/e2e/cluster-auth/${transport}`;
    const options = { transport, trackMessageLength: true };
    const alice = await openClient(browser, cluster, topic, { ...options, authToken: token('alice', 300) });
    const bob = await openClient(browser, cluster, topic, { ...options, authToken: token('bob', 300) });
    try {
      for (const c of [alice, bob]) {
        await waitFor('open', async () => (await c.events()).includes(`open:${transport}`));
      }
      const fromAlice = `hello from alice over ${transport} | ü€😀`;
      await alice.push(fromAlice);
      for (const c of [alice, bob]) assert.deepEqual(await messagesOf(c, 1), [fromAlice]);
      const fromBob = `and back from bob over ${transport}`;
      await bob.push(fromBob);
      for (const c of [alice, bob]) assert.deepEqual(await messagesOf(c, 2), [fromAlice, fromBob]);
      for (const c of [alice, bob]) {
        const events = await c.events();
        assert.ok(!events.some((e) => e === 'close' || e.startsWith('error')), `${transport}: ${events}`);
      }
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  test(`${transport} through the balancer: a forged or expired authToken is refused, by every node`, async () => {
    const cases = [
      ['forged', token('mallory', 300, 'not-the-secret'), false],
      ['expired', token('alice', -120), true],
    ];
    for (const [what, bad, expired] of cases) {
      // The real client, through the balancer: subscribe() rejects on the refused first connect.
      const known = new Set(browser.contexts());
      let client;
      let failure = null;
      try {
        client = await openClient(browser, cluster, `/e2e/cluster-auth/no-${transport}`, {
          transport, trackMessageLength: true, authToken: bad,
        });
      } catch (error) {
        failure = error.message;
      } finally {
        await client?.close();
        await closeContextsExcept(known);
      }
      assert.ok(failure !== null, `${transport} opened with a ${what} token`);
      // The client's own words for a refused first connect (401), per transport.
      assert.match(failure,
        /(WebSocket connection error|SSE connection failed|Streaming connection failed: 401|Long-polling connection failed)/,
        `${transport} with a ${what} token: unexpected failure`);

      // The same first request, raw, at the balancer and at each node: 401, with Atmosphere's
      // X-Atmosphere-error, and X-Atmosphere-Auth-Expired for the expired token.
      for (const [name, base] of endpoints()) {
        const url = `${base}/e2e/cluster-auth/no-${transport}?${atmoQuery(transport, '0', bad)}`;
        const answer = transport === 'websocket' ? await upgradeStatus(url) : await rawGet(url);
        const status = answer.status ?? answer;
        assert.equal(status, 401, `${name}, ${transport}, ${what} token: ${status}`);
        const header = (h) => (answer.headers instanceof Headers ? answer.headers.get(h) : answer.headers[h]);
        assert.ok(header('x-atmosphere-error'), `${name}, ${transport}, ${what}: no X-Atmosphere-error`);
        assert.equal(Boolean(header('x-atmosphere-auth-expired')), expired,
          `${name}, ${transport}, ${what}: X-Atmosphere-Auth-Expired`);
      }
    }
  });
}

test('websocket through the balancer: a token that expires mid-session closes the socket with a reason', async () => {
  const topic = '/e2e/cluster-auth/expiring';
  const client = await openClient(browser, cluster, topic, {
    transport: 'websocket', trackMessageLength: true, authToken: token('carol', 2),
  });
  try {
    await waitFor('open', async () => (await client.events()).includes('open:websocket'));
    // What the client's close callback is given: the close frame's code and reason.
    await client.page.evaluate(() => {
      window.client.sub.on('close', (r) => { window.client.closed = { status: r.status, reason: r.reasonPhrase }; });
    });
    // Still served while the token is valid (and the node's 5 s leeway runs).
    await publish(topic, 'before expiry');
    assert.deepEqual(await messagesOf(client, 1), ['before expiry']);
    const closed = await waitFor('the close', () => client.page.evaluate(() => window.client.closed), 20_000);
    assert.deepEqual(closed, { status: 1008, reason: 'token expired' });
    assert.ok((await client.events()).includes('close'));
  } finally {
    await client.close();
  }
});

test('take-over probe: another user\'s polls with the victim\'s tracking id are 403 on every node and the balancer', async () => {
  const topic = '/e2e/cluster-auth/private';
  const victim = await openClient(browser, cluster, topic, {
    transport: 'long-polling', trackMessageLength: true, authToken: token('alice', 300),
  });
  try {
    await waitFor('open', async () => (await victim.events()).includes('open:long-polling'));
    // The victim's tracking id, as the node gives it (X-Atmosphere-tracking-id on each poll's
    // answer) and as the client then sends it on its next poll.
    const answered = [];
    const polled = [];
    victim.page.on('response', (response) => {
      if (!response.url().includes('X-Atmosphere-Transport=long-polling')) return;
      const id = response.headers()['x-atmosphere-tracking-id'];
      if (id) answered.push(id);
    });
    victim.page.on('request', (request) => {
      const url = new URL(request.url());
      const id = url.searchParams.get('X-Atmosphere-tracking-id');
      if (request.method() === 'GET' && id && id !== '0') polled.push(id);
    });
    // A first message completes the parked poll (wherever the balancer put it).
    await publish(topic, 'warm-up');
    assert.deepEqual(await messagesOf(victim, 1), ['warm-up']);
    const id = await waitFor('the victim\'s tracking id', () => answered[0]);
    await waitFor('the victim\'s next poll', () => polled.length > 0);
    assert.ok(polled.every((p) => p === id), `the client polls with ${polled}, the node said ${id}`);

    const mallory = token('mallory', 300);
    const SECRET_TEXT = 'secret-for-alice';
    const INJECTED = 'injected-as-alice';
    const probe = async (label) => Promise.all(endpoints().map(async ([name, base]) => {
      const url = `${base}${topic}?${atmoQuery('long-polling', id, mallory)}`;
      const poll = await rawGet(url);
      assert.equal(poll.status, 403, `${label}: mallory's poll at ${name}: ${poll.status} ${poll.body}`);
      assert.ok(!poll.body.includes(SECRET_TEXT) && !poll.body.includes('warm-up'),
        `${label}: mallory's poll at ${name} got ${JSON.stringify(poll.body)}`);
      // Nor may mallory speak as the victim.
      const post = await fetch(url, {
        method: 'POST', body: INJECTED, headers: { 'Content-Type': 'text/plain' },
        signal: AbortSignal.timeout(10_000),
      });
      assert.equal(post.status, 403, `${label}: mallory's POST at ${name}: ${post.status} ${await post.text()}`);
    }));

    await probe('before the message');
    // The next message, with mallory probing every node while it goes out and after.
    await Promise.all([publish(topic, SECRET_TEXT), probe('while it is published')]);
    assert.deepEqual(await messagesOf(victim, 2), ['warm-up', SECRET_TEXT]);
    await probe('after it was delivered');

    // The victim kept its session: still polling with its id, no close, nothing injected.
    await publish(topic, 'still yours');
    assert.deepEqual(await messagesOf(victim, 3), ['warm-up', SECRET_TEXT, 'still yours']);
    const events = await victim.events();
    assert.deepEqual(events, ['open:long-polling'], `the victim's session was disturbed: ${events}`);
    assert.ok(polled.every((p) => p === id), `the victim's id changed: ${[...new Set(polled)]}`);
  } finally {
    await victim.close();
  }
});
