// Cettia sockets through the local cluster (three nodes behind HAProxy round-robin, no
// affinity), driven by the reference client of the cettia-protocol package (Node 10).
//
// Every HTTP request of that client opens a new connection (a keep-alive agent per request), so
// each poll and each POST of a socket is balanced on its own: polls move the socket between
// nodes while its POSTs land on other nodes at the same moment. Per run, SOCKETS sockets on one
// transport each send, one after another as the client does, a `message` (with a reply
// callback) and an `echo` for every payload in PAYLOADS. What a user of the client would check:
//   - every socket receives every sender's messages exactly once, in that sender's order;
//   - every echo comes back exactly once, equal to what was sent, in order;
//   - every reply callback runs exactly once, resolved;
//   - no transport error or close (the client treats any non-200 answer as a dead transport);
// and, read from HAProxy's own counters, no 5xx answer from any node.
//
//   node cluster.js --url http://127.0.0.1:PORT --stats http://127.0.0.1:STATS \
//     --transport longpoll|stream --runs N
"use strict";
var http = require("http");
var assert = require("assert");
var argv = require("minimist")(process.argv.slice(2));
var cettia = require("cettia-protocol");

var URL_BASE = argv.url;
var STATS = argv.stats;
var TRANSPORT = argv.transport || "longpoll";
var RUNS = +(argv.runs || 20);
var SOCKETS = 4;
var RUN_TIMEOUT_MS = 30000;

var factories = {
  longpoll: cettia.transport.createHttpLongpollTransport,
  stream: cettia.transport.createHttpStreamTransport
};

// Text, an object, unicode, a 20 KB string, and a 60 KB string (near the 64 KiB limit).
function payloads(sender) {
  return [
    "text from " + sender,
    {sender: sender, nested: {list: [1, 2, 3], flag: true}, quote: "\"|\n"},
    "ü€😀 " + sender,
    sender + ":" + new Array(20001).join("x"),
    sender + ":" + new Array(60001).join("y")
  ];
}

function haproxy5xx() {
  return new Promise(function(resolve, reject) {
    http.get(STATS + "/;csv", function(res) {
      var body = "";
      res.on("data", function(c) { body += c; });
      res.on("end", function() {
        var lines = body.split("\n");
        var header = lines[0].replace(/^# /, "").split(",");
        var col = header.indexOf("hrsp_5xx");
        var total = 0;
        lines.slice(1).forEach(function(line) {
          var f = line.split(",");
          if (f[0] === "nodes" && f[1] === "BACKEND") total += +f[col] || 0;
        });
        resolve(total);
      });
    }).on("error", reject);
  });
}

function run(runNumber) {
  return new Promise(function(resolve, reject) {
    var topic = "/cettia-cluster-test/" + TRANSPORT + "/" + runNumber + "-" + Date.now();
    var uri = URL_BASE + "/cettia?topic=" + encodeURIComponent(topic) +
      "&cettia-transport-name=" + TRANSPORT;
    var sockets = [];
    var opened = 0;
    var failed = false;
    var timer = setTimeout(function() {
      fail(new Error("run " + runNumber + " timed out: " + summary()));
    }, RUN_TIMEOUT_MS);

    function fail(error) {
      if (failed) return;
      failed = true;
      clearTimeout(timer);
      sockets.forEach(function(s) { s.socket.close(); });
      reject(error);
    }

    function summary() {
      return sockets.map(function(s) {
        return s.name + ": messages " + s.messages.length + "/" + SOCKETS * 5 +
          ", echoes " + s.echoes.length + "/5, replies " + s.replyEvents + "/5";
      }).join("; ");
    }

    function complete(s) {
      return s.messages.length >= SOCKETS * 5 && s.echoes.length >= 5 && s.replies >= 5 &&
        s.replyEvents >= 5;
    }

    function check() {
      if (failed || !sockets.every(complete)) return;
      // Let late duplicates show up before judging.
      setTimeout(function() {
        if (failed) return;
        try {
          sockets.forEach(function(s) {
            assert.equal(s.messages.length, SOCKETS * 5, s.name + " got a message twice");
            sockets.forEach(function(sender) {
              var fromIt = s.messages.filter(function(m) { return m.from === sender.name; })
                .map(function(m) { return m.data; });
              assert.deepStrictEqual(fromIt, sender.sent,
                s.name + " did not get " + sender.name + "'s messages once each, in order");
            });
            assert.deepStrictEqual(s.echoes, s.sent, s.name + ": echoes not once each, in order");
            // The client runs a callback once and forgets it: count the reply events too.
            assert.equal(s.replyEvents, 5, s.name + ": a reply arrived twice");
            assert.equal(s.replies, 5, s.name + ": a reply callback ran twice");
          });
        } catch (e) {
          return fail(e);
        }
        clearTimeout(timer);
        failed = true; // closing now is not a failure
        sockets.forEach(function(s) { s.socket.close(); });
        resolve();
      }, 300);
    }

    function start(s) {
      s.sent.forEach(function(data) {
        s.socket.send("message", {from: s.name, data: data}, function() {
          s.replies++;
          check();
        }, function(why) {
          fail(new Error(s.name + ": a message was rejected: " + JSON.stringify(why)));
        });
        s.socket.send("echo", data);
      });
    }

    for (var i = 0; i < SOCKETS; i++) {
      (function(name) {
        var s = {name: name, sent: payloads(name), messages: [], echoes: [], replies: 0,
          replyEvents: 0};
        s.socket = cettia.open(uri, {transports: [factories[TRANSPORT]], reconnect: false});
        s.socket.on("error", function(e) {
          fail(new Error(name + ": transport error " + (e && e.message)));
        });
        s.socket.on("close", function() {
          fail(new Error(name + ": socket closed during the run; " + summary()));
        });
        s.socket.on("message", function(m) {
          s.messages.push(m);
          check();
        });
        s.socket.on("reply", function() {
          s.replyEvents++;
          check();
        });
        s.socket.on("echo", function(data) {
          s.echoes.push(data);
          check();
        });
        s.socket.once("open", function() {
          // Every socket is in the topic before anyone speaks.
          if (++opened === SOCKETS) sockets.forEach(start);
        });
        sockets.push(s);
      })("s" + i);
    }
  });
}

(async function main() {
  var before = await haproxy5xx();
  for (var n = 1; n <= RUNS; n++) {
    var started = Date.now();
    try {
      await run(n);
    } catch (e) {
      console.error("cettia cluster (" + TRANSPORT + "): run " + n + " of " + RUNS + " FAILED: " + e.message);
      console.error("HAProxy 5xx answers so far: " + ((await haproxy5xx()) - before));
      process.exit(1);
    }
    console.log("cettia cluster (" + TRANSPORT + "): run " + n + " ok in " + (Date.now() - started) + " ms");
  }
  var fives = (await haproxy5xx()) - before;
  if (fives !== 0) {
    console.error("cettia cluster (" + TRANSPORT + "): HAProxy counted " + fives + " 5xx answers");
    process.exit(1);
  }
  console.log("cettia cluster (" + TRANSPORT + "): " + RUNS + " runs, every message, echo and reply once, in order; 0 5xx");
  // Done: the closed sockets' last requests (a parked poll, an abort) would keep Node waiting
  // for the servers' and the balancer's idle timeouts, two minutes per transport.
  process.exit(0);
})();
