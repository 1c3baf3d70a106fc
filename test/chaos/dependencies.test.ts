import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { createTestGateway, TEST_MASTER_KEY, type TestGateway } from '../helpers/gateway.ts';
import { type GatewayProcess, startGatewayProcess } from '../helpers/processes.ts';
import { CONTEXT, makeApiKeys, type PDatabase, PASSWORD_POLICIES, pConfig, spawnP, type SpawnedP } from '../helpers/payment-code.ts';
import { addPhone } from '../helpers/sms.ts';
import { makeClient, makeUser, setPolicies } from '../helpers/stepup-fixtures.ts';
import { STRICT } from '../helpers/env.ts';
import { type Answer, histogram, needsPostgres, PAYMENT_ACTION, record, send } from './cluster.ts';
import { type OwnPostgres, ownPostgresAvailable, startOwnPostgres } from './own-postgres.ts';

/**
 * Dependency failures, on real gateway processes:
 *
 * - PostgreSQL (a server of the test's own) stopped and started again in the middle of a
 *   load: while it is down every request that needs it — and every request that is rate
 *   limited, since the counters live there — is refused with 503 problem+json and
 *   Retry-After (fail closed: never a 500, never let through unmetered); when it is back the
 *   same gateway process serves again, and every write acknowledged before is still there.
 *   The payment-code service on the same server (its own schema) survives it too;
 * - the SMS provider failing or not answering: the challenge is 503 and the code that may
 *   still reach the phone is useless; when the provider is back, SMS works again.
 */

function ownPgSkip(): string | false {
  const missing = ownPostgresAvailable();
  if (missing === undefined) return false;
  if (STRICT) throw new Error(`strict mode: ${missing}`);
  return missing;
}

describe('PostgreSQL restarted mid-load: fail closed with 503, recover without a gateway restart', { skip: ownPgSkip() }, () => {
  let server: OwnPostgres;
  let setup: TestGateway;
  let g: GatewayProcess;
  let client: Awaited<ReturnType<typeof makeClient>>;
  let p: SpawnedP;
  let wallet: string;
  let aliceId: string;

  before(async () => {
    server = await startOwnPostgres();
    setup = await createTestGateway({ database: server.database, clock: { now: () => new Date() } });
    await makeUser(setup.gw, 'deb');
    client = await makeClient(setup.gw, 'dep client', ['dep.write']);
    await setPolicies(setup.gw, [{ id: 'p', action: 'dep.write', priority: 10, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' }, ...PASSWORD_POLICIES]);
    aliceId = (await makeUser(setup.gw, 'alice')).id;
    const pClient = await makeClient(setup.gw, 'payment-code service', [PAYMENT_ACTION]);
    const configFile = join(server.database.dataDir, 'dep.yaml');
    writeFileSync(configFile, stringify({ rateLimits: { enabled: true, perIp: 1_000_000, loginPerIp: 1_000_000, stepupUserPerIp: 1_000_000, perClient: 1_000_000 }, database: { poolMax: 5 } }));
    g = await startGatewayProcess(server.database, { masterKey: TEST_MASTER_KEY, args: ['--config', configFile] });
    // The payment-code service on the same PostgreSQL server (its own schema): it loses its
    // own database and the gateway at the same moment.
    const pDb: PDatabase = { dialect: 'postgres', dataDir: server.database.dataDir, url: server.url, schema: 'pc_chaos', async drop() {} };
    const config = pConfig({ url: g.url, issuer: setup.config.http.publicUrl, client: pClient }, pDb, { database: { poolMax: 5 } });
    [wallet] = (await makeApiKeys(config, [{ name: 'wallet', role: 'wallet' }])) as [string];
    p = await spawnP(config);
  });
  after(async () => {
    await p?.stop();
    await g?.stop();
    await setup?.close().catch(() => undefined);
    await server?.destroy();
  });

  it('during the outage every counted request is 503 problem+json with Retry-After; afterwards the same process serves and nothing acknowledged is lost', async () => {
    type Tagged = Answer & { startedAt: number; endedAt: number; path: string; retryAfter: string | null; contentType: string | null };
    const isP = (a: Tagged) => a.path === '/v1/payment-codes';
    const answers: Tagged[] = [];
    const acknowledged: string[] = [];
    let running = true;
    const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}, base = g.url) => {
      const startedAt = Date.now();
      let status = 0;
      let parsed: Record<string, unknown> = {};
      let retryAfter: string | null = null;
      let contentType: string | null = null;
      try {
        const res = await fetch(`${base}${path}`, { method, headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
        status = res.status;
        retryAfter = res.headers.get('retry-after');
        contentType = res.headers.get('content-type');
        const text = await res.text();
        try {
          parsed = JSON.parse(text) as Record<string, unknown>;
        } catch {
          parsed = { text: text.slice(0, 100) };
        }
      } catch (err) {
        parsed = { code: `network: ${String((err as { cause?: { code?: string } }).cause?.code ?? err)}` };
      }
      const a: Tagged = { status, body: parsed, startedAt, endedAt: Date.now(), path, retryAfter, contentType };
      answers.push(a);
      return a;
    };
    const worker = async (w: number) => {
      let i = 0;
      while (running) {
        i += 1;
        if (w === 0) {
          // The payment-code service: asks the gateway for a step-up and records it in its own database.
          await call('POST', '/v1/payment-codes', { subject: aliceId, context: CONTEXT }, { authorization: `Bearer ${wallet}` }, p.url);
        } else if ((i + w) % 2 === 0) {
          const r = await call('POST', '/v1/stepup', { subject: 'deb', action: 'dep.write', context: { ref: `w${w}-${i}` } }, { authorization: client.basic });
          if (r.status === 201) acknowledged.push(r.body.stepup_id as string);
        } else {
          // Touches the database only through the rate-limit counter.
          await call('GET', '/openapi.json');
        }
        await sleep(10);
      }
    };
    const load = Array.from({ length: 8 }, (_, w) => worker(w));
    await sleep(2000);
    await server.stop('fast');
    const downFrom = Date.now();
    await sleep(3000);
    const downUntil = Date.now();
    await server.start();
    const upAt = Date.now();
    // Recovery: the same process answers again (the pool reconnects on its own).
    let recoveredAt: number | undefined;
    for (let i = 0; i < 300 && recoveredAt === undefined; i += 1) {
      const ready = await send(g.url, 'GET', '/readyz');
      if (ready.status === 200) recoveredAt = Date.now();
      else await sleep(100);
    }
    await sleep(3000);
    running = false;
    await Promise.all(load);

    const during = answers.filter((a) => a.startedAt > downFrom && a.endedAt < downUntil);
    const afterwards = answers.filter((a) => recoveredAt !== undefined && a.startedAt > recoveredAt + 500);
    const server5xx = answers.filter((a) => a.status >= 500);
    record({
      test: 'PostgreSQL restarted mid-load',
      requests: answers.length,
      duringOutage: during.length,
      duringOutageAnswers: histogram(during),
      afterRecovery: afterwards.length,
      afterRecoveryAnswers: histogram(afterwards),
      paymentCodeDuringOutage: histogram(during.filter(isP)),
      secondsToRecover: recoveredAt === undefined ? null : (recoveredAt - upAt) / 1000,
      acknowledgedWrites: acknowledged.length,
      all: histogram(answers),
    });
    assert.equal(g.child.exitCode, null, `the gateway process is still running: ${g.stderr().slice(-3000)}`);
    assert.equal(p.child.exitCode, null, `the payment-code service is still running: ${p.stderr().slice(-3000)}`);
    const pDuring = during.filter(isP);
    const pAfter = afterwards.filter(isP);
    assert.ok(pDuring.length > 0 && pAfter.length > 0, `payment-code requests during (${pDuring.length}) and after (${pAfter.length})`);
    assert.ok(pAfter.every((a) => a.status === 401 && a.body.code === 'step_up_required'), `P after recovery: ${histogram(pAfter)}`);
    assert.ok(during.length > 20, `requests during the outage: ${during.length}`);
    for (const a of during) {
      assert.equal(a.status, 503, `during the outage ${a.path}: ${a.status} ${JSON.stringify(a.body)}`);
      assert.match(a.contentType ?? '', /^application\/problem\+json/);
      assert.ok(Number(a.retryAfter) >= 1, `Retry-After on ${a.path}`);
    }
    assert.ok(server5xx.every((a) => a.status === 503), `only 503s, never a 500: ${histogram(server5xx)}`);
    assert.ok(answers.every((a) => a.status !== 0), `no connection failed: ${histogram(answers.filter((a) => a.status === 0))}`);
    assert.ok(recoveredAt !== undefined, 'ready again without a restart');
    const gAfter = afterwards.filter((a) => !isP(a));
    assert.ok(gAfter.length > 20 && gAfter.every((a) => a.status === 200 || a.status === 201), `after recovery: ${histogram(gAfter)}`);
    const present = new Set((await setup.gw.store.db.selectFrom('stepups').select('id').execute()).map((r) => r.id));
    assert.deepEqual(acknowledged.filter((id) => !present.has(id)), [], 'every acknowledged step-up survived the restart');
  });
});

describe('SMS provider down: 503, and no code left usable', { skip: needsPostgres() }, () => {
  let setup: TestGateway;
  let g: GatewayProcess;
  let provider: Server;
  let client: Awaited<ReturnType<typeof makeClient>>;
  let mode: 'fail' | 'hang' | 'ok' = 'fail';
  const received: string[] = [];

  before(async () => {
    provider = createServer((req: IncomingMessage, res: ServerResponse) => {
      let body = '';
      req.on('data', (c: Buffer) => {
        body += c.toString('utf8');
      });
      req.on('end', () => {
        received.push(body);
        if (mode === 'hang') return; // never answers
        if (mode === 'fail') res.writeHead(500).end('{"error":"down"}');
        else res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      });
    });
    await new Promise<void>((resolve) => provider.listen(0, '127.0.0.1', resolve));
    const { port } = provider.address() as AddressInfo;
    setup = await createTestGateway({ dialect: 'postgres', clock: { now: () => new Date() } });
    await setPolicies(setup.gw, [{ id: 'sms', action: 'sms.dep', priority: 10, require: { anyOf: [['sms_otp']] }, acr: 'urn:stepgate:aal2' }]);
    const user = await makeUser(setup.gw, 'sid');
    await addPhone(setup.gw, user.id, '+8613900139000');
    client = await makeClient(setup.gw, 'sms client', ['sms.dep']);
    const configFile = join(setup.database.dataDir, 'sms.yaml');
    writeFileSync(configFile, stringify({ rateLimits: { enabled: false }, sms: { provider: 'webhook', sendTimeoutSeconds: 2, resendCooldownSeconds: 30, webhook: { url: `http://127.0.0.1:${port}/sms`, secret: 'chaos-webhook-secret-0123456789abcdef' } } }));
    g = await startGatewayProcess(setup.database, { masterKey: TEST_MASTER_KEY, args: ['--config', configFile] });
  });
  after(async () => {
    await g?.stop();
    await setup?.close();
    provider?.closeAllConnections();
    provider?.close();
  });

  async function stepUp() {
    const r = await send(g.url, 'POST', '/v1/stepup', { subject: 'sid', action: 'sms.dep', context: { ref: String(Math.random()) } }, { authorization: client.basic });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body as { stepup_id: string; ticket: string };
  }
  const lastCode = () => {
    const m = /\b(\d{6})\b/.exec(JSON.parse(received.at(-1) ?? '{}').text ?? '');
    assert.ok(m, 'the provider received a code');
    return m[1]!;
  };

  for (const failure of ['fail', 'hang'] as const) {
    it(`provider ${failure === 'fail' ? 'answers 500' : 'never answers'}: the challenge is 503 with Retry-After, and the code it was sent is refused`, async () => {
      mode = failure;
      const s = await stepUp();
      const started = await send(g.url, 'POST', `/v1/stepup/${s.stepup_id}/challenge`, { factor: 'sms_otp' }, { authorization: `Ticket ${s.ticket}` });
      assert.equal(started.status, 503, JSON.stringify(started.body));
      assert.equal(started.body.code, 'sms_unavailable');
      const code = lastCode();
      const tried = await send(g.url, 'POST', `/v1/stepup/${s.stepup_id}/verify`, { factor: 'sms_otp', code }, { authorization: `Ticket ${s.ticket}` });
      assert.ok(tried.status >= 400 && tried.status < 500, `the code that may still arrive is useless: ${tried.status} ${JSON.stringify(tried.body)}`);
      const status = await send(g.url, 'GET', `/v1/stepup/${s.stepup_id}`, undefined, { authorization: `Ticket ${s.ticket}` });
      assert.notEqual(status.body.status, 'completed');
      record({ test: `SMS provider ${failure}`, challenge: started.status, verifyWithSentCode: `${tried.status} ${String(tried.body.code)}` });
    });
  }

  it('provider back: a new step-up gets its code and completes', async () => {
    mode = 'ok';
    const s = await stepUp();
    const started = await send(g.url, 'POST', `/v1/stepup/${s.stepup_id}/challenge`, { factor: 'sms_otp' }, { authorization: `Ticket ${s.ticket}` });
    assert.equal(started.status, 200, JSON.stringify(started.body));
    const done = await send(g.url, 'POST', `/v1/stepup/${s.stepup_id}/verify`, { factor: 'sms_otp', code: lastCode() }, { authorization: `Ticket ${s.ticket}` });
    assert.equal(done.status, 200, JSON.stringify(done.body));
  });
});
