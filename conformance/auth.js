// Cettia sockets with a JSON Web Token in their URI (`?token=`), driven by the reference
// client of the cettia-protocol package (Node 10) against one node started with
// --jwt-hmac-secret, on each of the client's three transports. What a user would check:
//   - with a valid token the socket opens and its echo comes back;
//   - with a forged or an expired token it never opens, and the client closes the socket;
//   - a socket whose token expires mid-session hears why (an `error` event, "token expired")
//     and is closed.
//
//   node auth.js --url http://127.0.0.1:PORT --secret SECRET
"use strict";
var crypto = require("crypto");
var assert = require("assert");
var argv = require("minimist")(process.argv.slice(2));
var cettia = require("cettia-protocol");

var URL_BASE = argv.url;
var SECRET = argv.secret;
var TRANSPORTS = {
  websocket: cettia.transport.createWebSocketTransport,
  stream: cettia.transport.createHttpStreamTransport,
  longpoll: cettia.transport.createHttpLongpollTransport
};

function b64(value) {
  return Buffer.from(JSON.stringify(value)).toString("base64")
    .replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
}

function token(sub, expIn, secret) {
  var head = b64({alg: "HS256", typ: "JWT"});
  var body = b64({sub: sub, exp: Math.floor(Date.now() / 1000) + expIn});
  var signature = crypto.createHmac("sha256", secret || SECRET).update(head + "." + body)
    .digest("base64").replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  return head + "." + body + "." + signature;
}

function open(transport, tok) {
  // As in cluster.js: an HTTP transport's URI names it (the client would otherwise try a
  // WebSocket first).
  var uri = URL_BASE + "/cettia?topic=/auth/cettia&token=" + tok +
    (transport === "websocket" ? "" : "&cettia-transport-name=" + transport);
  var socket = cettia.open(uri, {transports: [TRANSPORTS[transport]], reconnect: false});
  // The client reports a refused transport as `error` (an EventEmitter without a listener
  // would throw it); the cases below read what they need.
  socket.errors = [];
  socket.on("error", function(e) {
    socket.errors.push(typeof e === "string" ? e : (e && e.message) || String(e));
  });
  return socket;
}

// Resolves with the first of `events` the socket fires, failing after `ms`.
function first(socket, events, ms) {
  return new Promise(function(resolve, reject) {
    var timer = setTimeout(function() {
      reject(new Error("none of " + events.join(", ") + " within " + ms + " ms"));
    }, ms);
    events.forEach(function(name) {
      socket.on(name, function(data) {
        clearTimeout(timer);
        resolve({event: name, data: data});
      });
    });
  });
}

async function valid(transport) {
  var socket = open(transport, token("alice", 300));
  assert.equal((await first(socket, ["open", "close"], 10000)).event, "open");
  var echoed = first(socket, ["echo", "close"], 10000);
  socket.send("echo", {hello: transport});
  var answer = await echoed;
  assert.equal(answer.event, "echo");
  assert.deepEqual(answer.data, {hello: transport});
  socket.close();
}

// The client reports the refused transport (401) as `error`; the socket must never open.
async function refused(transport, tok) {
  var socket = open(transport, tok);
  var opened = false;
  socket.on("open", function() { opened = true; });
  await first(socket, ["error", "close"], 15000);
  assert.ok(!opened, transport + " opened with a bad token");
  socket.close();
}

async function expiring(transport) {
  var socket = open(transport, token("carol", 1));
  assert.equal((await first(socket, ["open", "close"], 10000)).event, "open");
  // The node takes a token 5 s past its exp, then ends the transport.
  try {
    await first(socket, ["close"], 20000);
  } catch (error) {
    throw new Error(error.message + "; heard " + JSON.stringify(socket.errors));
  }
  assert.ok(socket.errors.indexOf("token expired") >= 0,
    transport + ": heard " + JSON.stringify(socket.errors));
}

(async function main() {
  var failures = 0;
  for (var transport of Object.keys(TRANSPORTS)) {
    var cases = [
      ["a valid token opens, echo answers", function() { return valid(transport); }],
      ["a forged token never opens", function() { return refused(transport, token("x", 300, "wrong")); }],
      ["an expired token never opens", function() { return refused(transport, token("alice", -120)); }],
      ["an expiring token closes the socket, saying why", function() { return expiring(transport); }]
    ];
    for (var c of cases) {
      try {
        await c[1]();
        console.log("ok   " + transport + ": " + c[0]);
      } catch (error) {
        failures++;
        console.log("FAIL " + transport + ": " + c[0] + ": " + error.message);
      }
    }
  }
  process.exit(failures === 0 ? 0 : 1);
})();
