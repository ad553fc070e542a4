// A chat room member on the reference Cettia client (cettia-protocol, Node 10), driven over
// stdin and stdout by the browser tests (e2e/tests/chat_page.test.js):
//   node chat_member.js --uri 'http://127.0.0.1:PORT/cettia?topic=...&token=...' --transport stream
// Prints one JSON line per thing that happens: {"event": "open" | "close" | "error" |
// "message" | "presence", "data": ...}. Reads one JSON line per thing to do: {"send": "message",
// "data": ...} sends that event.
"use strict";
var argv = require("minimist")(process.argv.slice(2));
var cettia = require("cettia-protocol");
var readline = require("readline");

var TRANSPORTS = {
  websocket: cettia.transport.createWebSocketTransport,
  stream: cettia.transport.createHttpStreamTransport,
  longpoll: cettia.transport.createHttpLongpollTransport
};
var transport = argv.transport || "stream";
var uri = argv.uri + (transport === "websocket" ? "" : "&cettia-transport-name=" + transport);

function say(event, data) {
  process.stdout.write(JSON.stringify({event: event, data: data}) + "\n");
}

var socket = cettia.open(uri, {transports: [TRANSPORTS[transport]]});
socket.on("open", function() { say("open"); });
socket.on("close", function() { say("close"); });
socket.on("error", function(e) { say("error", (e && e.message) || String(e)); });
socket.on("message", function(data) { say("message", data); });
socket.on("presence", function(data) { say("presence", data); });

readline.createInterface({input: process.stdin}).on("line", function(line) {
  var command = JSON.parse(line);
  socket.send(command.send, command.data);
}).on("close", function() {
  process.exit(0);
});
