// A peer for benches/compare.sh: echo and broadcast servers written the way a `ws` user would
// write them (the patterns of the ws README). No optional native add-ons (bufferutil,
// utf-8-validate) are installed: ws's pure-JS paths, as `npm install ws` gives.
//
//   node server.mjs echo --listen 127.0.0.1:9201
//   node server.mjs broadcast --listen 127.0.0.1:9202
//
// ws answers pings itself (autoPong) and completes close handshakes.
import { WebSocketServer, WebSocket } from 'ws';

const usage = 'usage: node server.mjs echo|broadcast [--listen HOST:PORT]  (default 127.0.0.1:9201)';
const args = process.argv.slice(2);
const mode = args.shift();
if (mode !== 'echo' && mode !== 'broadcast') {
  console.error(usage);
  process.exit(2);
}
let listen = '127.0.0.1:9201';
while (args.length > 0) {
  const arg = args.shift();
  if (arg === '--listen' && args.length > 0) {
    listen = args.shift();
  } else {
    console.error(`unknown argument ${JSON.stringify(arg)}; ${usage}`);
    process.exit(2);
  }
}
const colon = listen.lastIndexOf(':');
const host = listen.slice(0, colon).replace(/^\[|\]$/g, '');
const port = Number(listen.slice(colon + 1));

const wss = new WebSocketServer({ host, port });

wss.on('connection', (ws) => {
  ws.on('error', (err) => console.error(`connection: ${err.message}`));
  if (mode === 'echo') {
    ws.on('message', (data, isBinary) => {
      ws.send(data, { binary: isBinary });
    });
  } else {
    ws.on('message', (data, isBinary) => {
      for (const client of wss.clients) {
        if (client.readyState === WebSocket.OPEN) {
          client.send(data, { binary: isBinary });
        }
      }
    });
  }
});

wss.on('listening', () => {
  console.error(`node ws ${mode}: listening on ws://${listen}`);
});
wss.on('error', (err) => {
  console.error(`server: ${err.message}`);
  process.exit(1);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}
