// flock /tmp/stepgate-bench.lock npx node --disable-warning=ExperimentalWarning bench/duplicate-members.ts [--n 200000] [--rounds 3]
//
// What refusing duplicate JSON member names costs (src/verifier/strict-json.ts): the scan of a
// typical step-up body next to JSON.parse of the same text, the check of a step-up token's
// header and payload, and the whole body middleware — express.json against strictJsonBody —
// over a fake request (no sockets), so the difference is the parser's and nothing else's.
// Rounds are interleaved on a shared machine; wall time per call, median of the rounds.
import { PassThrough } from 'node:stream';
import { parseArgs } from 'node:util';
import express, { type Request, type RequestHandler, type Response } from 'express';
import { findDuplicateMember, jwsDuplicateMember, strictJsonBody } from '../src/verifier/strict-json.ts';

const { values } = parseArgs({ options: { n: { type: 'string', default: '200000' }, rounds: { type: 'string', default: '3' } } });
const N = Number(values.n);
const ROUNDS = Number(values.rounds);

const body = JSON.stringify({
  subject: 'user-4711',
  action: 'payment_code.issue',
  context: { amount: '128.50', currency: 'CNY', payee: 'Shanghai Coffee Co. 42', device_id: 'dev-3f9a1c', code_count: 1, offline: false },
  binding_message: 'Pay CNY 128.50 to Shanghai Coffee Co. 42',
  redirect_uri: 'https://pay.example.com/cb',
  state: 'st-88f0a1',
});
const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
const token = `${b64({ alg: 'ES256', kid: 'key-2026-12', typ: 'stepup+jwt' })}.${b64({
  iss: 'https://mfa.example.com',
  sub: 'usr_01HZX',
  aud: 'client_payment_code',
  iat: 1764662400,
  exp: 1764662520,
  jti: 'jti_abcdefghijklmnopqrstuv',
  txn: 'stp_0123456789abcdef',
  auth_time: 1764662390,
  acr: 'urn:stepgate:aal2',
  amr: ['pwd', 'otp', 'mfa'],
  authorization_details: [{ type: 'payment_code.issue', amount: '128.50', currency: 'CNY', payee: 'Shanghai Coffee Co. 42', device_id: 'dev-3f9a1c' }],
})}.${'A'.repeat(86)}`;

function perCallNs(n: number, fn: () => void): number {
  const started = process.hrtime.bigint();
  for (let i = 0; i < n; i += 1) fn();
  return Number(process.hrtime.bigint() - started) / n;
}

/** One request through a body middleware: a stream carrying the body, headers as a client sends them. */
function runMiddleware(handler: RequestHandler): Promise<void> {
  const raw = Buffer.from(body);
  const req = new PassThrough() as unknown as Request & PassThrough;
  Object.assign(req, { headers: { 'content-type': 'application/json', 'content-length': String(raw.length) }, method: 'POST', url: '/v1/stepup' });
  const done = new Promise<void>((resolve, reject) => {
    handler(req, {} as Response, (err?: unknown) => (err === undefined ? resolve() : reject(err as Error)));
  });
  (req as PassThrough).end(raw);
  return done;
}

async function perRequestNs(n: number, handler: RequestHandler): Promise<number> {
  const started = process.hrtime.bigint();
  for (let i = 0; i < n; i += 1) await runMiddleware(handler);
  return Number(process.hrtime.bigint() - started) / n;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const results: Record<string, number[]> = { scan: [], parse: [], jws: [], expressJson: [], strictJsonBody: [] };
const plain = express.json({ limit: 65536, strict: true, type: ['application/json', 'application/*+json'] });
const strict = strictJsonBody({ limit: 65536 });
const requests = Math.max(1000, Math.floor(N / 20));
for (let round = 0; round < ROUNDS; round += 1) {
  results.scan?.push(perCallNs(N, () => findDuplicateMember(body)));
  results.parse?.push(perCallNs(N, () => JSON.parse(body)));
  results.jws?.push(perCallNs(N, () => jwsDuplicateMember(token)));
  results.expressJson?.push(await perRequestNs(requests, plain));
  results.strictJsonBody?.push(await perRequestNs(requests, strict));
}
process.stdout.write(`step-up body ${body.length} bytes, token ${token.length} characters, ${ROUNDS} rounds (median, ns per call)\n`);
for (const [name, xs] of Object.entries(results)) process.stdout.write(`${name.padEnd(16)} ${median(xs).toFixed(0).padStart(7)}   [${xs.map((x) => x.toFixed(0)).join(', ')}]\n`);
