// The seed article's hub design, written for the benchmark: Node `net` keeps every client
// socket in one array of {name, sessionId, client}; a broadcast writes to each of them and a
// directed send finds the client by name in that array. On top sits the HTTP API and the
// frames of tcphub's docs/PROTOCOL.md, so the same load tool drives both.
//
// Differences from the article, all needed to serve the benchmark: the hub answers `sync`
// with `welcome` and pushes `message` frames as newline-terminated JSON; a data chunk may
// hold several newline-separated JSON objects; and nothing is logged per connection (the
// article prints the whole client list on every connect, which would dominate the figures).
//
// Usage: node server.js [--tcp-port 9000] [--http-port 8080]

'use strict';

const net = require('net');
const http = require('http');

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 ? Number(process.argv[at + 1]) : fallback;
}

const TCP_PORT = option('--tcp-port', 9000);
const HTTP_PORT = option('--http-port', 8080);

/** clients = [{ name: client alias, sessionId: unique session id, client: the socket }] */
const clients = [];
let lastMessageId = 0;

function storeClient(client, name = '') {
  if (!client || !client.remoteAddress || !client.remotePort) return;
  const { remoteAddress, remotePort } = client;
  const sessionId = `${remoteAddress}:${remotePort}`;
  const existClient = clients.find((m) => m.sessionId == sessionId);
  if (!existClient) {
    clients.push({ name, sessionId, client });
  } else {
    existClient.client = client;
    existClient.name = name;
  }
}

function frame(object) {
  return JSON.stringify(object) + '\n';
}

const server = net.createServer(function (client) {
  const { remoteAddress, remotePort } = client;
  client.name = `${remoteAddress}:${remotePort}`;
  storeClient(client);

  client.on('data', function (data) {
    // The article parses each chunk as one JSON object; here a chunk may carry several,
    // one per line.
    for (const text of data.toString('utf-8').split('\n')) {
      if (!text.trim()) continue;
      try {
        const { type, clientName } = JSON.parse(text);
        if (type == 'sync') {
          storeClient(client, clientName);
          client.write(frame({ type: 'welcome', id: client.name, clientName }));
        }
      } catch (error) {}
    }
  });

  client.on('close', function () {
    const index = clients.findIndex((m) => m.sessionId == client.name);
    if (index >= 0) clients.splice(index, 1);
  });

  client.on('error', function () {});
});

server.listen({ port: TCP_PORT, host: '127.0.0.1', backlog: 1024 });

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': status < 400 ? 'application/json' : 'application/problem+json',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

function notFound(res, detail) {
  reply(res, 404, { type: 'about:blank', title: 'Not Found', status: 404, detail, code: 'client_not_found' });
}

function readMessage(req, res, onMessage) {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf-8'));
    } catch (error) {
      return reply(res, 400, { type: 'about:blank', title: 'Bad Request', status: 400, detail: String(error), code: 'invalid_body' });
    }
    onMessage(body.message);
  });
}

const api = http.createServer(function (req, res) {
  const url = new URL(req.url, 'http://hub');
  const send = url.pathname.match(/^\/clients\/([^/]+)\/send$/);
  if (req.method == 'GET' && url.pathname == '/clients') {
    const limit = Number(url.searchParams.get('limit') || 1000);
    const listed = clients.slice(0, limit).map((m) => ({ id: m.sessionId, name: m.name || null, peer: m.sessionId }));
    reply(res, 200, { total: clients.length, clients: listed });
  } else if (req.method == 'POST' && url.pathname == '/broadcast') {
    readMessage(req, res, (message) => {
      const id = String(++lastMessageId);
      const line = frame({ type: 'message', id, scope: 'broadcast', message });
      clients.map((m) => {
        m.client.write(line);
      });
      reply(res, 202, { id, recipients: clients.length, queued: clients.length, dropped: 0 });
    });
  } else if (req.method == 'POST' && send) {
    const clientName = decodeURIComponent(send[1]);
    readMessage(req, res, (message) => {
      const client = clients.find((m) => m.name == clientName);
      if (!client) return notFound(res, `no client named ${clientName}`);
      const id = String(++lastMessageId);
      client.client.write(frame({ type: 'message', id, scope: 'direct', message }));
      reply(res, 202, { id, queued: 1 });
    });
  } else {
    notFound(res, `no route ${req.method} ${url.pathname}`);
  }
});

api.listen({ port: HTTP_PORT, host: '127.0.0.1' });
