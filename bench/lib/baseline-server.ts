// The bare node:http baseline the gateway is compared with: the same crypto and the same
// number of durable writes per request, and nothing else (no framework, no validation, no
// audit chain). Prints its port on stdout. Run: node bench/lib/baseline-server.ts [dataDir]
import { createHmac, createSecretKey, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { jwtVerify, SignJWT } from 'jose';

const dataDir = process.argv[2] ?? '/tmp';
const db = new DatabaseSync(join(dataDir, `baseline-${process.pid}.sqlite`));
db.exec('PRAGMA journal_mode = WAL');
db.exec('PRAGMA synchronous = NORMAL');
db.exec('CREATE TABLE IF NOT EXISTS w (id TEXT PRIMARY KEY, v TEXT NOT NULL, at INTEGER NOT NULL)');
const insert = db.prepare('INSERT INTO w (id, v, at) VALUES (?, ?, ?)');
const hmacKey = createSecretKey(randomBytes(20));
const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
// What a relying service verifies: one token, checked again each time (signature and claims).
const presented = await new SignJWT({ acr: 'urn:stepgate:aal2' }).setProtectedHeader({ alg: 'ES256', typ: 'stepup+jwt' }).setIssuedAt().setExpirationTime('1h').sign(privateKey);

function readBody(req: import('node:http').IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    let body = '';
    req.on('data', (c: Buffer) => {
      body += c.toString('utf8');
    });
    req.on('end', () => resolve(body));
  });
}

const server = createServer(async (req, res) => {
  const body = await readBody(req);
  const url = req.url ?? '/';
  if (url === '/echo') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(body === '' ? '{}' : JSON.stringify(JSON.parse(body)));
    return;
  }
  // /work?hmac=1&sign=1&verify=1&writes=2: that much crypto and that many autocommitted inserts.
  const q = new URL(url, 'http://x').searchParams;
  const hmacs = Number(q.get('hmac') ?? 0);
  const signs = Number(q.get('sign') ?? 0);
  const writes = Number(q.get('writes') ?? 0);
  const verifies = Number(q.get('verify') ?? 0);
  for (let i = 0; i < verifies; i += 1) await jwtVerify(presented, publicKey, { algorithms: ['ES256'], typ: 'stepup+jwt' });
  let mac = '';
  for (let i = 0; i < hmacs; i += 1) mac = createHmac('sha1', hmacKey).update(body).digest('hex');
  let token = '';
  for (let i = 0; i < signs; i += 1) {
    token = await new SignJWT({ jti: randomUUID(), mac }).setProtectedHeader({ alg: 'ES256', typ: 'stepup+jwt' }).setIssuedAt().setExpirationTime('2m').sign(privateKey);
  }
  for (let i = 0; i < writes; i += 1) insert.run(randomUUID(), mac, Date.now());
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ ok: true, token }));
});
server.keepAliveTimeout = 5000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${(server.address() as AddressInfo).port}\n`);
});
