import assert from 'node:assert/strict';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import pg from 'pg';
import { verifyAuditChain } from '../../src/audit/audit-log.ts';
import { verifyEventChain } from '../../src/payment-code/events.ts';
import { openConfiguredPaymentCodeStore } from '../../src/payment-code/service.ts';
import { openStore } from '../../src/store/database.ts';
import { cliEnv, runCli } from '../helpers/cli.ts';
import { TEST_DATABASE_URL } from '../helpers/env.ts';
import { createTestGateway, TEST_MASTER_KEY, type TestGateway } from '../helpers/gateway.ts';
import { needPskc, writePskc } from '../helpers/hardware-tokens.ts';
import { CONTEXT, PASSWORD_POLICIES } from '../helpers/payment-code.ts';
import { cleanEnv, startGatewayProcess } from '../helpers/processes.ts';
import { makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { createTestDatabase } from '../helpers/stores.ts';
import { type Answer, type Cluster, histogram, needsPostgres, record, send, startCluster } from './cluster.ts';

/**
 * Crash safety: `kill -9` (no shutdown, no flush, no goodbye) in the middle of work.
 *
 * - one of two gateways under a payment-code load: the other carries on (< 2 % of requests
 *   fail, counting every request in flight at the moment of the kill), every payment code
 *   acknowledged exists exactly once, no code exists that was not acknowledged, and both
 *   audit chains (the gateway's and P's) verify;
 * - the CLI during a PSKC import, while its transaction is writing: nothing of the file is in
 *   the inventory afterwards, and importing it again works;
 * - a gateway on SQLite (WAL) while it acknowledges writes: the file passes
 *   `PRAGMA integrity_check` and holds every write that was acknowledged.
 */

const BIN = new URL('../../bin/stepgate.js', import.meta.url).pathname;
const ROOT = new URL('../..', import.meta.url).pathname;
const LOAD_SECONDS = Number(process.env.STEPGATE_CHAOS_LOAD_SECONDS ?? '20');
const WORKERS = 16;

describe('crash safety: kill -9 one of two gateways mid-load', { skip: needsPostgres() }, () => {
  let c: Cluster;
  const users: string[] = [];
  let background: Awaited<ReturnType<typeof makeClient>>;

  before(async () => {
    c = await startCluster({
      gatewayConfig: { login: { maxFailures: 1000 } },
      async seed(setup) {
        await setPolicies(setup.gw, [...PASSWORD_POLICIES, { id: 'bg', action: 'load.background', priority: 10, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' }]);
        for (let i = 0; i < WORKERS; i += 1) users.push((await makeUser(setup.gw, `load-${i}`)).id);
        background = await makeClient(setup.gw, 'background load', ['load.background']);
      },
    });
  });
  after(async () => {
    await c?.close();
  });

  it(`the survivor carries the load (< 2 % failed, or no more than were in flight at the kill), no payment code is lost or doubled, both audit chains verify`, async () => {
    const requests: Answer[] = [];
    const acknowledged: { code: string; stepupId: string }[] = [];
    let running = true;
    const call = async (url: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
      const a = await send(url, method, path, body, headers);
      requests.push(a);
      return a;
    };
    const wallet = { authorization: `Bearer ${c.wallet}` };
    // One user per worker, each issuing codes in a loop: request, step up with the password, collect.
    const worker = async (w: number) => {
      while (running) {
        const subject = users[w]!;
        const first = await call(c.pProxy.url, 'POST', '/v1/payment-codes', { subject, context: CONTEXT }, wallet);
        if (first.status !== 401 || first.body.code !== 'step_up_required') continue;
        const stepupId = first.body.stepup_id as string;
        const done = await call(c.proxy.url, 'POST', `/v1/stepup/${stepupId}/verify`, { factor: 'password', password: PASSWORD }, { authorization: `Ticket ${first.body.ticket as string}` });
        if (done.status !== 200) continue;
        await sleep(1100); // the polling interval
        for (let tries = 0; tries < 5; tries += 1) {
          const issued = await call(c.pProxy.url, 'POST', '/v1/payment-codes', { subject, context: CONTEXT, stepup_id: stepupId }, wallet);
          if (issued.status === 201) {
            acknowledged.push({ code: issued.body.code as string, stepupId });
            break;
          }
          // Still pending / polling too fast: the protocol says wait and ask again. Anything else ends this flow.
          if (!(issued.status === 401 && issued.body.code === 'step_up_pending') && issued.body.code !== 'slow_down') break;
          await sleep(1000);
        }
      }
    };
    // Next to the payment flows, a relying service creating step-ups as fast as it can: many
    // more requests, each a database write the test can look for afterwards.
    const createdStepUps: string[] = [];
    const creator = async (w: number) => {
      let i = 0;
      while (running) {
        i += 1;
        const r = await call(c.proxy.url, 'POST', '/v1/stepup', { subject: `load-${w}`, action: 'load.background', context: { ref: `${w}-${i}` } }, { authorization: background.basic });
        if (r.status === 201) createdStepUps.push(r.body.stepup_id as string);
      }
    };
    const CREATORS = 8;
    const load = [...Array.from({ length: WORKERS }, (_, w) => worker(w)), ...Array.from({ length: CREATORS }, (_, w) => creator(w))];
    await sleep((LOAD_SECONDS * 1000) / 3);
    const victim = c.gateways[0]!;
    const beforeKill = requests.length;
    victim.child.kill('SIGKILL');
    await once(victim.child, 'exit');
    await sleep((LOAD_SECONDS * 2000) / 3);
    running = false;
    await Promise.all(load);

    const failed = requests.filter((r) => r.status === 0 || r.status >= 500);
    const failedShare = failed.length / requests.length;
    const codes = acknowledged.map((a) => a.code);
    const store = await openConfiguredPaymentCodeStore(c.pConfig);
    let stored: { stepup_id: string }[];
    let pChain: Awaited<ReturnType<typeof verifyEventChain>>;
    try {
      stored = await store.db.selectFrom('pc_codes').select('stepup_id').execute();
      pChain = await verifyEventChain(store.db);
    } finally {
      await store.close();
    }
    const gChain = await verifyAuditChain(c.setup.gw.store.db);
    const storedPerStepUp = new Map<string, number>();
    for (const row of stored) storedPerStepUp.set(String(row.stepup_id), (storedPerStepUp.get(String(row.stepup_id)) ?? 0) + 1);
    record({
      test: 'kill -9 one gateway mid-load',
      seconds: LOAD_SECONDS,
      requests: requests.length,
      requestsBeforeKill: beforeKill,
      failed: failed.length,
      failedPercent: Number((failedShare * 100).toFixed(2)),
      stepUpsAcknowledged: createdStepUps.length,
      codesAcknowledged: codes.length,
      codesStored: stored.length,
      proxyRetriedOnRefusal: c.proxy.stats.retried,
      failures: histogram(failed),
      gatewayAuditRows: gChain.rows,
      gatewayAuditOk: gChain.ok,
      paymentCodeEventsOk: pChain.ok,
    });
    assert.ok(requests.length > 200, `enough load: ${requests.length} requests`);
    assert.ok(beforeKill > 0 && requests.length > beforeKill * 1.5, 'the load went on after the kill');
    // Each of the WORKERS + CREATORS loops has one request in flight when the gateway dies, and
    // the proxy rightly does not retry a request that reached it (that could double a POST), so
    // those may fail; everything sent afterwards must reach the survivor. On a loaded machine
    // fewer requests fit in LOAD_SECONDS, so the share alone would measure the machine.
    const inFlightAtKill = WORKERS + CREATORS;
    assert.ok(failedShare < 0.02 || failed.length <= inFlightAtKill, `${failed.length} failed, ${(failedShare * 100).toFixed(2)} % (${histogram(failed)}); at most ${inFlightAtKill} were in flight at the kill`);
    assert.equal(new Set(codes).size, codes.length, 'no code handed out twice');
    assert.equal(stored.length, codes.length, 'every acknowledged code is stored, and nothing else');
    for (const a of acknowledged) assert.equal(storedPerStepUp.get(a.stepupId), 1, `one code for step-up ${a.stepupId}`);
    assert.equal(gChain.ok, true, JSON.stringify(gChain));
    assert.equal(pChain.ok, true, JSON.stringify(pChain));
    assert.equal((await send(c.gateways[1]!.url, 'GET', '/readyz')).status, 200, 'the survivor is ready');
    const present = new Set((await c.setup.gw.store.db.selectFrom('stepups').select('id').execute()).map((r) => r.id));
    assert.deepEqual(createdStepUps.filter((id) => !present.has(id)), [], 'every acknowledged step-up is stored');
  });
});

describe('crash safety: kill -9 during a PSKC import through the CLI', { skip: needsPostgres() }, () => {
  let tg: TestGateway;
  before(async () => {
    tg = await createTestGateway({ dialect: 'postgres' });
  });
  after(async () => {
    await tg?.close();
  });

  it('killed while its transaction writes the tokens: nothing of the file is imported; importing it again imports all', async (t) => {
    if (needPskc(t)) return;
    const COUNT = 20_000;
    const file = join(tg.database.dataDir, 'big.pskc');
    writePskc({ encryption: 'none', generate: { count: COUNT, prefix: 'KILL', algorithm: 'hotp' }, out: file });
    const env = cliEnv(tg);
    // node-postgres names its connections after PGAPPNAME: that is how we find this process's session.
    const appName = `stepgate-chaos-import-${process.pid}`;
    const importing = spawn(process.execPath, [BIN, 'tokens', 'import', file], { cwd: ROOT, env: cleanEnv({ ...env, PGAPPNAME: appName }), stdio: ['ignore', 'pipe', 'pipe'] });
    let importErr = '';
    importing.stderr.on('data', (d: Buffer) => {
      importErr += d.toString('utf8');
    });
    const exited = once(importing, 'exit');
    // Kill it when PostgreSQL shows its INSERT into hardware_tokens running (inside the import transaction).
    const probe = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await probe.connect();
    let seen = false;
    try {
      const deadline = Date.now() + 120_000;
      while (!seen && Date.now() < deadline && importing.exitCode === null) {
        const r = await probe.query(`select count(*)::int as n from pg_stat_activity where application_name = $1 and query ilike '%insert into "hardware_tokens"%' and state <> 'idle'`, [appName]);
        seen = (r.rows[0] as { n: number }).n > 0;
        if (!seen) await sleep(5);
      }
      assert.ok(seen, `caught the import while it was writing tokens (exit ${importing.exitCode}: ${importErr})`);
      importing.kill('SIGKILL');
      await exited;
      // PostgreSQL rolls the open transaction back when the dead client's connection goes.
      for (let i = 0; i < 200; i += 1) {
        const r = await probe.query('select count(*)::int as n from pg_stat_activity where application_name = $1', [appName]);
        if ((r.rows[0] as { n: number }).n === 0) break;
        await sleep(50);
      }
    } finally {
      await probe.end();
    }
    const tokens = await tg.gw.store.db.selectFrom('hardware_tokens').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    const imports = await tg.gw.store.db.selectFrom('hardware_token_imports').selectAll().execute();
    assert.equal(Number(tokens.n), 0, 'no token of the killed import');
    assert.ok(imports.every((i) => i.status !== 'completed'), 'no import recorded as completed');
    const again = await runCli(['tokens', 'import', file], env);
    assert.equal(again.status, 0, again.stderr);
    const after2 = await tg.gw.store.db.selectFrom('hardware_tokens').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    assert.equal(Number(after2.n), COUNT, 'the second import has every token');
    record({ test: 'kill -9 during a PSKC import', tokensInFile: COUNT, tokensAfterKill: Number(tokens.n), tokensAfterReimport: Number(after2.n) });
  });
});

describe('crash safety: kill -9 a gateway on SQLite (WAL) while it acknowledges writes', () => {
  it('integrity_check is ok and every acknowledged step-up is in the file; the audit chain verifies', async () => {
    const database = await createTestDatabase('sqlite');
    const setup = await createTestGateway({ database, clock: { now: () => new Date() } });
    let client: Awaited<ReturnType<typeof makeClient>>;
    try {
      await setPolicies(setup.gw, [{ id: 'p', action: 'wal.write', priority: 10, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' }]);
      await makeUser(setup.gw, 'wally');
      client = await makeClient(setup.gw, 'wal client', ['wal.write']);
    } finally {
      await setup.close().catch(() => undefined);
    }
    const configFile = join(database.dataDir, 'wal.yaml');
    writeFileSync(configFile, 'rateLimits:\n  enabled: false\n');
    const g = await startGatewayProcess(database, { masterKey: TEST_MASTER_KEY, args: ['--config', configFile] });
    const acknowledged: string[] = [];
    let running = true;
    let attempted = 0;
    const writer = async () => {
      while (running) {
        attempted += 1;
        const r = await send(g.url, 'POST', '/v1/stepup', { subject: 'wally', action: 'wal.write', context: { ref: `write-${attempted}` } }, { authorization: client.basic });
        if (r.status === 201) acknowledged.push(r.body.stepup_id as string);
      }
    };
    const writers = Array.from({ length: 8 }, writer);
    while (acknowledged.length < 300) await sleep(20);
    g.child.kill('SIGKILL');
    await once(g.child, 'exit');
    running = false;
    await Promise.all(writers);
    try {
      const store = await openStore({ url: '', sqliteFile: database.sqliteFile });
      try {
        const check = await sql<{ integrity_check: string }>`PRAGMA integrity_check`.execute(store.db);
        assert.deepEqual(check.rows.map((r) => r.integrity_check), ['ok']);
        const present = new Set((await store.db.selectFrom('stepups').select('id').execute()).map((r) => r.id));
        const lost = acknowledged.filter((id) => !present.has(id));
        const chain = await verifyAuditChain(store.db);
        record({ test: 'kill -9 a gateway on SQLite WAL', writesAttempted: attempted, writesAcknowledged: acknowledged.length, acknowledgedLost: lost.length, integrityCheck: check.rows[0]?.integrity_check, auditChainOk: chain.ok });
        assert.deepEqual(lost, [], 'no acknowledged write lost');
        assert.equal(chain.ok, true, JSON.stringify(chain));
      } finally {
        await store.close();
      }
    } finally {
      await database.drop();
    }
  });
});
