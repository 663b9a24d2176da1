'use strict';
// opsflow's blue-green proxy for Docker hosts (runs on the opsflow node base image).
//
//   node bluegreen_proxy.js serve          HTTP on every port of $OPSFLOW_PROXY_PORTS (comma separated),
//                                          each request forwarded to the same port of a live container
//   node bluegreen_proxy.js probe URL S    exit 0 when URL answers 2xx within S seconds, else 1
//
// The live containers are listed in /run/opsflow/upstream as "name1,name2;" (the ';' marks a
// complete write). The file is read on every request (and watched), so switching colour is one
// file write: requests already forwarded finish on the old colour, every new request goes to the
// new one. /run/opsflow/inflight says which list the proxy serves and how many requests are still
// open on containers no longer in it ({"live": "a,b;", "draining": {"old": 2}}), rewritten when
// either changes, so a deploy stops the old containers as soon as they are idle, not after a guess.
// A connection per request (no upstream keep-alive) means no request is sent on a socket of a
// stopped container.
const fs = require('fs');
const http = require('http');

const UPSTREAM_FILE = '/run/opsflow/upstream';
const INFLIGHT_FILE = '/run/opsflow/inflight';
const open = new Map();  // host -> requests forwarded to it and not finished
const TOKEN = process.env.OPSFLOW_PROXY_TOKEN || '';
const PROBE_HOST = 'x-opsflow-probe';
const PROBE_TOKEN = 'x-opsflow-probe-token';
const NAMES = /^([A-Za-z0-9][A-Za-z0-9_.-]*)(,[A-Za-z0-9][A-Za-z0-9_.-]*)*;$/;
let liveText = '';
let live = [];
let turn = 0;

function upstreams() {
  let text;
  try {
    text = fs.readFileSync(UPSTREAM_FILE, 'utf8').trim();
  } catch (err) {
    return live;
  }
  if (text !== liveText && NAMES.test(text)) {  // a torn or empty read keeps the last good list
    liveText = text;
    live = text.slice(0, -1).split(',');
    console.log(`${new Date().toISOString()} live upstream: ${live.join(', ')}`);
    report();
  }
  return live;
}

function report() {
  const draining = {};
  for (const [host, count] of open) if (!live.includes(host)) draining[host] = count;
  try {
    fs.writeFileSync(`${INFLIGHT_FILE}.tmp`, JSON.stringify({ live: liveText, draining }));
    fs.renameSync(`${INFLIGHT_FILE}.tmp`, INFLIGHT_FILE);
  } catch (err) {
    console.log(`${new Date().toISOString()} could not write ${INFLIGHT_FILE}: ${err.message}`);
  }
}

function track(host, delta) {
  const count = (open.get(host) || 0) + delta;
  if (count > 0) open.set(host, count); else open.delete(host);
  if (!live.includes(host)) report();  // only a draining host's count matters to a deploy
}

function serve(port) {
  const server = http.createServer((req, res) => {
    // A deploy probes a new container through the proxy's own port, before it is live: the request
    // names it and carries this proxy's token (so nobody else reaches a version that is not live).
    const probe = TOKEN && req.headers[PROBE_TOKEN] === TOKEN ? req.headers[PROBE_HOST] : undefined;
    delete req.headers[PROBE_HOST];
    delete req.headers[PROBE_TOKEN];
    if (probe !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(probe)) {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end('bad probe target\n');
      return;
    }
    const hosts = upstreams();
    if (!hosts.length && probe === undefined) {
      res.writeHead(503, { 'content-type': 'text/plain' });
      res.end('no live upstream yet\n');
      return;
    }
    const host = probe || hosts[turn++ % hosts.length];
    if (!probe) {
      track(host, 1);
      let done = false;
      res.on('close', () => { if (!done) { done = true; track(host, -1); } });
    }
    const upstream = http.request(
      { host, port, method: req.method, path: req.url, headers: req.headers, agent: false, timeout: 60000 },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      });
    upstream.on('timeout', () => upstream.destroy(new Error('upstream timeout')));
    upstream.on('error', (err) => {
      console.log(`${new Date().toISOString()} ${host}:${port} ${req.method} ${req.url}: ${err.message}`);
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end();
    });
    req.pipe(upstream);
  });
  server.keepAliveTimeout = 5000;
  server.listen(port, () => console.log(`listening on ${port}`));
}

function probe(url, seconds) {
  const deadline = Date.now() + seconds * 1000;
  let last = 'no answer yet';
  const attempt = () => {
    const req = http.get(url, { timeout: Math.max(200, Math.min(2000, deadline - Date.now())), agent: false }, (res) => {
      res.resume();
      if (res.statusCode >= 200 && res.statusCode < 300) {
        console.log(`HTTP ${res.statusCode}`);
        process.exit(0);
      }
      last = `HTTP ${res.statusCode}`;
      again();
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => { last = err.code || err.message; again(); });
  };
  const again = () => {
    if (Date.now() >= deadline) {
      console.log(last);
      process.exit(1);
    }
    setTimeout(attempt, 50);
  };
  attempt();
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'serve') {
  const ports = (process.env.OPSFLOW_PROXY_PORTS || '').split(',').filter(Boolean).map(Number);
  if (!ports.length || ports.some((p) => !(p >= 1 && p <= 65535))) {
    console.error('OPSFLOW_PROXY_PORTS must list the ports to serve, e.g. 8080,9090');
    process.exit(2);
  }
  upstreams();
  report();
  fs.watchFile(UPSTREAM_FILE, { interval: 50 }, upstreams);  // a switch is seen without traffic too
  ports.forEach(serve);
} else if (mode === 'probe' && rest.length === 2) {
  probe(rest[0], Number(rest[1]));
} else {
  console.error('usage: bluegreen_proxy.js serve | probe URL SECONDS');
  process.exit(2);
}
