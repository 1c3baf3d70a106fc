import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createTestGateway, TEST_MASTER_KEY, type TestGateway } from '../helpers/gateway.ts';
import { type GatewayProcess, startGatewayProcess } from '../helpers/processes.ts';
import { makeClient, makeUser, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';
import { DEFAULT_TOTP, insertActiveTotp, oathtoolTotp } from '../helpers/totp.ts';
import { needTool } from '../helpers/env.ts';

/**
 * Abuse limits on real `stepgate serve` processes (two of them on one database, as in a
 * scale-out): slowloris on headers and on bodies is cut by the server's timeouts; the
 * per-address and per-client budgets hold across both processes (counted in the database);
 * an oversized body is 413 problem+json; and a sign-in flood from many addresses (a botnet:
 * no per-address budget helps) cannot starve step-ups, whose non-password factors never
 * wait for an argon2 slot.
 *
 * Each test speaks from its own client address (X-Forwarded-For, trusted one hop), so the
 * budgets of one test do not leak into another.
 */

const WINDOW = 3600;
const PER_IP = 30;
const LOGIN_PER_IP = 8;
const PER_CLIENT = 10;
const ACTION = 'abuse.confirm';

/** Waits out the end of a fixed window if it is close, so a burst cannot straddle two windows. */
async function awayFromWindowEdge(): Promise<void> {
  const left = WINDOW * 1000 - (Date.now() % (WINDOW * 1000));
  if (left < 120_000) await sleep(left + 1000);
}

interface RawResult {
  /** Everything the server sent before it closed the connection. */
  received: string;
  /** How many slow pieces we had sent when the server closed on us. */
  sentPieces: number;
  closedByServer: boolean;
}

/** Opens a socket, writes `head`, then one `piece` every `everyMs`, up to `maxPieces`; stops when the server closes. */
async function trickle(port: number, head: string, piece: string, everyMs: number, maxPieces: number): Promise<RawResult> {
  const socket: Socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let received = '';
  let closed = false;
  socket.on('data', (c: Buffer) => {
    received += c.toString('utf8');
  });
  socket.on('close', () => {
    closed = true;
  });
  socket.on('error', () => {
    closed = true;
  });
  socket.write(head);
  let sent = 0;
  while (!closed && sent < maxPieces) {
    await sleep(everyMs);
    if (closed) break;
    socket.write(piece);
    sent += 1;
  }
  const closedByServer = closed;
  socket.destroy();
  return { received, sentPieces: sent, closedByServer };
}

for (const dialect of testDialects()) {
  describe(`abuse limits on two gateway processes (${dialect})`, () => {
    let setup: TestGateway;
    let a: GatewayProcess;
    let b: GatewayProcess;
    let payClient: Awaited<ReturnType<typeof makeClient>>;
    let stepupClient: Awaited<ReturnType<typeof makeClient>>;
    let totp: { secret: Buffer };
    let ipSeq = 0;
    /** A fresh client address per test (the budgets are per address). */
    const newIp = () => {
      ipSeq += 1;
      return `10.${(ipSeq >> 16) & 255}.${(ipSeq >> 8) & 255}.${ipSeq & 255}`;
    };

    before(async () => {
      setup = await createTestGateway({ dialect, clock: { now: () => new Date() } });
      const user = await makeUser(setup.gw, 'rhea');
      totp = await insertActiveTotp(setup.gw, user.id);
      payClient = await makeClient(setup.gw, 'budgeted client', [ACTION]);
      stepupClient = await makeClient(setup.gw, 'step-up client', [ACTION]);
      await setPolicies(setup.gw, [{ id: 'totp', action: ACTION, priority: 10, require: { anyOf: [['totp']] }, acr: 'urn:stepgate:aal2', tokenTtlSeconds: 120 }]);
      const configFile = join(setup.database.dataDir, 'abuse.yaml');
      writeFileSync(
        configFile,
        [
          'http:',
          '  trustProxyHops: 1',
          '  headersTimeoutSeconds: 2',
          '  requestTimeoutSeconds: 4',
          'login:',
          '  delayBaseSeconds: 0',
          'stepup:',
          '  pollIntervalSeconds: 1',
          'rateLimits:',
          '  enabled: true',
          `  windowSeconds: ${WINDOW}`,
          `  perIp: ${PER_IP}`,
          `  loginPerIp: ${LOGIN_PER_IP}`,
          '  stepupUserPerIp: 1000',
          `  perClient: ${PER_CLIENT}`,
          '',
        ].join('\n'),
      );
      // Two argon2 slots per process, so the flood below is well beyond capacity.
      const options = { masterKey: TEST_MASTER_KEY, args: ['--config', configFile], env: { STEPGATE_PASSWORD_MAX_CONCURRENT_HASHES: '2' } };
      [a, b] = await Promise.all([startGatewayProcess(setup.database, options), startGatewayProcess(setup.database, options)]);
    });
    after(async () => {
      await Promise.all([a?.stop(), b?.stop()]);
      await setup?.close();
    });

    const on = (i: number) => (i % 2 === 0 ? a : b);

    it('slowloris on the headers: a connection sending one header line at a time is answered 408 and closed by http.headersTimeoutSeconds', async () => {
      // 40 lines at 250 ms would take 10 s; the 2 s header deadline must cut it off long before.
      const r = await trickle(a.port, 'GET /v1/me HTTP/1.1\r\nHost: localhost\r\n', 'X-Slow: yes\r\n', 250, 40);
      assert.ok(r.closedByServer, 'the server closed the connection');
      assert.ok(r.sentPieces < 40, `cut off after ${r.sentPieces} of 40 header lines`);
      assert.match(r.received, /^HTTP\/1\.1 408/, `answered: ${r.received.slice(0, 80)}`);
      // The gateway is fine afterwards.
      assert.equal((await fetch(`${a.url}/healthz`)).status, 200);
    });

    it('slowloris on the body: a request body trickled a byte at a time is cut by http.requestTimeoutSeconds', async () => {
      const head = `POST /v1/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nX-Forwarded-For: ${newIp()}\r\n\r\n{"username":"`;
      // 60 bytes at 250 ms would take 15 s; the 4 s request deadline must cut it off first.
      const r = await trickle(b.port, head, 'x', 250, 60);
      assert.ok(r.closedByServer, 'the server closed the connection');
      assert.ok(r.sentPieces < 60, `cut off after ${r.sentPieces} of 60 body bytes`);
      assert.doesNotMatch(r.received, /^HTTP\/1\.1 [25]/, `no success and no 5xx: ${r.received.slice(0, 80)}`);
      assert.equal((await fetch(`${b.url}/healthz`)).status, 200);
    });

    it('an oversized body is 413 problem+json, on every process', async () => {
      for (const p of [a, b]) {
        const res = await fetch(`${p.url}/v1/login`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-forwarded-for': newIp() }, body: JSON.stringify({ username: 'x'.repeat(200_000), password: 'y' }) });
        assert.equal(res.status, 413);
        assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/);
        assert.equal(((await res.json()) as { code: string }).code, 'payload_too_large');
      }
    });

    it(`the per-address budget holds across both processes: of 80 parallel requests split over both, exactly ${PER_IP} pass`, async () => {
      await awayFromWindowEdge();
      const ip = newIp();
      const results = await Promise.all(Array.from({ length: 80 }, (_, i) => fetch(`${on(i).url}/v1/me`, { headers: { 'x-forwarded-for': ip } })));
      const statuses = results.map((r) => r.status);
      assert.equal(statuses.filter((s) => s === 401).length, PER_IP, statuses.join(','));
      assert.equal(statuses.filter((s) => s === 429).length, 80 - PER_IP);
      const refused = results.find((r) => r.status === 429);
      assert.ok(Number(refused?.headers.get('retry-after')) >= 1);
      // Another address is not affected.
      assert.equal((await fetch(`${b.url}/v1/me`, { headers: { 'x-forwarded-for': newIp() } })).status, 401);
    });

    it(`sign-ins per address across both processes: of 20 parallel, exactly ${LOGIN_PER_IP} reach the password check`, async () => {
      await awayFromWindowEdge();
      const ip = newIp();
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          fetch(`${on(i).url}/v1/login`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-forwarded-for': ip }, body: JSON.stringify({ username: 'nobody-here', password: 'wrong password 123' }) }),
        ),
      );
      const statuses = results.map((r) => r.status);
      // 401 (checked), 429 (over the budget) or 503 (every argon2 slot busy: refused at once,
      // its budgets charged in the background, see ShedCharges): never more than the budget
      // reach the password check, and every request is charged to the budget exactly once.
      assert.ok(statuses.every((s) => s === 401 || s === 429 || s === 503), statuses.join(','));
      assert.ok(statuses.filter((s) => s === 401).length <= LOGIN_PER_IP, statuses.join(','));
      assert.ok(statuses.filter((s) => s === 401 || s === 503).length >= LOGIN_PER_IP, `the budget let ${LOGIN_PER_IP} through (checked or refused for capacity): ${statuses.join(',')}`);
      const charged = async () => {
        const rows = await setup.gw.store.db.selectFrom('rate_limits').select('count').where('key', 'like', `login_ip:${ip}:%`).execute();
        return rows.reduce((n, r) => n + Number(r.count), 0);
      };
      let count = await charged();
      for (let i = 0; i < 100 && count < 20; i += 1) {
        await sleep(50);
        count = await charged();
      }
      assert.equal(count, 20, 'each of the 20 sign-ins charged the budget once, across both processes');
    });

    it(`the per-client budget holds across both processes and all the client's addresses: exactly ${PER_CLIENT} of 25`, async () => {
      await awayFromWindowEdge();
      const results = await Promise.all(
        Array.from({ length: 25 }, (_, i) => fetch(`${on(i).url}/v1/clients/me`, { headers: { authorization: payClient.basic, 'x-forwarded-for': newIp() } })),
      );
      const statuses = results.map((r) => r.status);
      assert.equal(statuses.filter((s) => s === 200).length, PER_CLIENT, statuses.join(','));
      assert.equal(statuses.filter((s) => s === 429).length, 25 - PER_CLIENT);
    });

    it('a sign-in flood from many addresses does not starve step-ups: a TOTP step-up completes and its token is issued meanwhile', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      let flooding = true;
      const floodStatuses = new Map<number, number>();
      // 48 concurrent sign-ins at a time, each from its own address and for another (unknown)
      // account, so neither a per-address budget nor an account lockout stops them before the
      // argon2 hash (unknown users are hashed against a dummy, for equal timing).
      const flooder = async () => {
        while (flooding) {
          const r = await fetch(`${a.url}/v1/login`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-forwarded-for': newIp() }, body: JSON.stringify({ username: `flood-${ipSeq}`, password: `wrong password ${ipSeq}` }) });
          await r.arrayBuffer();
          floodStatuses.set(r.status, (floodStatuses.get(r.status) ?? 0) + 1);
        }
      };
      const flood = Array.from({ length: 48 }, flooder);
      try {
        await sleep(300);
        const ip = newIp();
        const created = await fetch(`${a.url}/v1/stepup`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: stepupClient.basic, 'x-forwarded-for': ip }, body: JSON.stringify({ subject: 'rhea', action: ACTION, context: { amount: '10.00', currency: 'CNY' } }) });
        assert.equal(created.status, 201, await created.clone().text());
        const { stepup_id: id, ticket } = (await created.json()) as { stepup_id: string; ticket: string };
        const code = oathtoolTotp(totp.secret, DEFAULT_TOTP, Math.floor(Date.now() / 1000));
        const verified = await fetch(`${a.url}/v1/stepup/${id}/verify`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Ticket ${ticket}`, 'x-forwarded-for': ip }, body: JSON.stringify({ factor: 'totp', code }) });
        assert.equal(verified.status, 200, await verified.clone().text());
        const token = await fetch(`${a.url}/v1/stepup/${id}/token`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: stepupClient.basic, 'x-forwarded-for': ip } });
        assert.equal(token.status, 200, await token.clone().text());
        assert.match(((await token.json()) as { step_up_token: string }).step_up_token, /^ey/);
      } finally {
        flooding = false;
        await Promise.all(flood);
      }
      const total = [...floodStatuses.values()].reduce((x, y) => x + y, 0);
      assert.ok(total > 0);
      // 408: this gateway's http.requestTimeoutSeconds is 4 (for the slowloris tests above); on
      // a machine loaded far past its cores a flood request can take longer than that to arrive.
      assert.ok([...floodStatuses.keys()].every((s) => s === 401 || s === 503 || s === 408), `flood answered only 401/503 (or 408): ${[...floodStatuses].join(' ')}`);
      assert.ok((floodStatuses.get(503) ?? 0) > 0, `the flood went beyond the argon2 capacity (some 503 overloaded): ${[...floodStatuses].join(' ')}`);
      t.diagnostic(`sign-in flood meanwhile: ${[...floodStatuses].map(([s, n]) => `${s}×${n}`).join(' ')}`);
    });
  });
}
