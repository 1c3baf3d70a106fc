import assert from 'node:assert/strict';
import { createSecretKey } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { verifyAuditChain } from '../../src/audit/audit-log.ts';
import { FixedClock } from '../../src/clock.ts';
import { timeStep, totp } from '../../src/otp/index.ts';
import { createTestGateway, TEST_MASTER_KEY, type TestGateway } from '../helpers/gateway.ts';
import { type GatewayProcess, startGatewayProcess } from '../helpers/processes.ts';
import { makeClient, makeUser, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';
import { insertActiveTotp } from '../helpers/totp.ts';

/**
 * A one-time code is compared inside the transaction that charged the attempt, and its
 * outcome commits with the charges (src/flows/verify-stepup-factor.ts, `comparesInline`):
 * one durable commit per verification, the charges still first, the audit chain whole.
 */

const ACTION = 'payment_code.issue';
const CONTEXT = { amount: '120.00', currency: 'CNY', payee: 'shop-42' };
const POLICIES = [{ id: 'totp-any', action: ACTION, priority: 10, require: { anyOf: [['totp']] }, acr: 'urn:stepgate:aal2' as const }];

const codeAt = (secret: Buffer, at: Date) => totp(createSecretKey(secret), at, 30, 6, 'SHA1');
const wrongCode = (right: string) => String((Number(right) + 1) % 1_000_000).padStart(6, '0');

for (const dialect of testDialects()) {
  describe(`one-time code verified in the charging transaction (${dialect})`, () => {
    let tg: TestGateway;
    let pay: Awaited<ReturnType<typeof makeClient>>;

    before(async () => {
      tg = await createTestGateway({ dialect, clock: new FixedClock(Date.UTC(2026, 2, 1, 12, 0, 5)) });
      await setPolicies(tg.gw, POLICIES);
      pay = await makeClient(tg.gw, 'payment-code service', [ACTION]);
    });
    after(async () => {
      await tg.close();
    });

    async function stepUp(subject: string) {
      const res = await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject, action: ACTION, context: CONTEXT });
      assert.equal(res.status, 201, res.text);
      return res.body as { stepup_id: string; ticket: string };
    }
    const verify = (s: { stepup_id: string; ticket: string }, code: string) => tg.http().post(`/v1/stepup/${s.stepup_id}/verify`).set('Authorization', `Ticket ${s.ticket}`).send({ factor: 'totp', code });

    it('a wrong code is charged and audited, the right one then completes: attempts, failures, counter and the chain', async () => {
      const user = await makeUser(tg.gw, 'kim');
      const { id: factorId, secret } = await insertActiveTotp(tg.gw, user.id);
      const s = await stepUp('kim');
      const right = codeAt(secret, tg.clock.now());
      const refused = await verify(s, wrongCode(right));
      assert.equal(refused.status, 401, refused.text);
      assert.equal(refused.body.code, 'factor_invalid');
      let row = await tg.gw.store.db.selectFrom('stepups').select(['attempts', 'status']).where('id', '=', s.stepup_id).executeTakeFirstOrThrow();
      assert.deepEqual({ ...row }, { attempts: 1, status: 'pending' });
      let factor = await tg.gw.store.db.selectFrom('factors').select(['failures', 'counter']).where('id', '=', factorId).executeTakeFirstOrThrow();
      assert.deepEqual({ ...factor, counter: Number(factor.counter) }, { failures: 1, counter: 0 });

      const ok = await verify(s, right);
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.body.completed, true);
      row = await tg.gw.store.db.selectFrom('stepups').select(['attempts', 'status']).where('id', '=', s.stepup_id).executeTakeFirstOrThrow();
      assert.deepEqual({ ...row }, { attempts: 2, status: 'completed' });
      factor = await tg.gw.store.db.selectFrom('factors').select(['failures', 'counter']).where('id', '=', factorId).executeTakeFirstOrThrow();
      assert.deepEqual({ ...factor, counter: Number(factor.counter) }, { failures: 0, counter: timeStep(tg.clock.now(), 30) });

      const events = await tg.gw.store.db.selectFrom('audit_log').select(['type', 'data']).where('subject', '=', user.id).orderBy('seq').execute();
      const mine = events.filter((e) => (JSON.parse(e.data) as { stepupId?: string }).stepupId === s.stepup_id);
      assert.deepEqual(mine.map((e) => e.type).filter((t) => t !== 'stepup.created'), ['stepup.factor_failed', 'stepup.factor_verified', 'stepup.completed']);
      assert.equal((JSON.parse(mine.find((e) => e.type === 'stepup.factor_failed')!.data) as { reason: string }).reason, 'invalid');
      assert.equal((await verifyAuditChain(tg.gw.store.db)).ok, true);

      // The code is spent: on a second step-up it is a replay, charged and audited as such.
      const again = await stepUp('kim');
      const replayed = await verify(again, right);
      assert.equal(replayed.status, 401, replayed.text);
      const after = await tg.gw.store.db.selectFrom('stepups').select(['attempts', 'status']).where('id', '=', again.stepup_id).executeTakeFirstOrThrow();
      assert.deepEqual({ ...after }, { attempts: 1, status: 'pending' });
    });

    // Counted on SQLite, where the driver counts its WAL fsyncs; on PostgreSQL the
    // transactions are the same code (declared for SQLite only: strict runs allow no skip).
    if (dialect === 'sqlite') it('one durable commit per verification, right or wrong (SQLite: WAL fsyncs)', async () => {
      const stats = tg.gw.store.commitStats;
      assert.ok(stats !== undefined, 'the SQLite store counts its WAL fsyncs');
      const user = await makeUser(tg.gw, 'lee');
      const { secret } = await insertActiveTotp(tg.gw, user.id);
      const s = await stepUp('lee');
      const right = codeAt(secret, tg.clock.now());
      let before = stats.flushes;
      assert.equal((await verify(s, wrongCode(right))).status, 401);
      assert.equal(stats.flushes - before, 1);
      before = stats.flushes;
      assert.equal((await verify(s, right)).status, 200);
      assert.equal(stats.flushes - before, 1);
    });

    it('the last attempt spent on a wrong code still denies the step-up', async () => {
      const user = await makeUser(tg.gw, 'max');
      const { secret } = await insertActiveTotp(tg.gw, user.id);
      const s = await stepUp('max');
      await tg.gw.store.db.updateTable('stepups').set({ max_attempts: 1 }).where('id', '=', s.stepup_id).execute();
      const right = codeAt(secret, tg.clock.now());
      assert.equal((await verify(s, wrongCode(right))).status, 401);
      const row = await tg.gw.store.db.selectFrom('stepups').select(['attempts', 'status']).where('id', '=', s.stepup_id).executeTakeFirstOrThrow();
      assert.deepEqual({ ...row }, { attempts: 1, status: 'denied' });
      const late = await verify(s, right);
      assert.ok([409, 429].includes(late.status), late.text);
    });
  });

  describe(`one-time codes on two gateway processes, one ${dialect} database`, () => {
    let setup: TestGateway;
    let a: GatewayProcess;
    let b: GatewayProcess;
    let pay: Awaited<ReturnType<typeof makeClient>>;

    before(async () => {
      setup = await createTestGateway({ dialect, clock: { now: () => new Date() } });
      await setPolicies(setup.gw, POLICIES);
      pay = await makeClient(setup.gw, 'pay', [ACTION]);
      [a, b] = await Promise.all([startGatewayProcess(setup.database, { masterKey: TEST_MASTER_KEY }), startGatewayProcess(setup.database, { masterKey: TEST_MASTER_KEY })]);
    });
    after(async () => {
      await Promise.all([a?.stop(), b?.stop()]);
      await setup.close();
    });

    it('right and wrong codes raced across both: at most the attempt limit charged, at most one success each, the chain whole', async () => {
      const users = await Promise.all(['nia', 'oda', 'pia'].map((n) => makeUser(setup.gw, n)));
      const secrets = await Promise.all(users.map(async (u) => (await insertActiveTotp(setup.gw, u.id)).secret));
      const stepUps = [];
      for (const u of users) {
        const res = await fetch(`${a.url}/v1/stepup`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: pay.basic }, body: JSON.stringify({ subject: u.username, action: ACTION, context: CONTEXT }) });
        assert.equal(res.status, 201);
        stepUps.push((await res.json()) as { stepup_id: string; ticket: string });
      }
      const requests = stepUps.flatMap((s, i) => {
        const right = codeAt(secrets[i]!, new Date());
        return Array.from({ length: 8 }, (_, j) => ({ s, via: j % 2 === 0 ? a : b, code: j % 2 === 0 ? right : wrongCode(right) }));
      });
      const results = await Promise.all(
        requests.map(async ({ s, via, code }) => {
          const res = await fetch(`${via.url}/v1/stepup/${s.stepup_id}/verify`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Ticket ${s.ticket}` }, body: JSON.stringify({ factor: 'totp', code }) });
          return { s, status: res.status, body: (await res.json()) as { code?: string } };
        }),
      );
      for (const r of results) assert.ok(r.status === 200 || ['factor_invalid', 'stepup_not_pending', 'attempts_exhausted'].includes(r.body.code ?? ''), JSON.stringify(r.body));
      for (const s of stepUps) {
        const row = await setup.gw.store.db.selectFrom('stepups').select(['attempts', 'max_attempts', 'status']).where('id', '=', s.stepup_id).executeTakeFirstOrThrow();
        const successes = results.filter((r) => r.s === s && r.status === 200).length;
        assert.ok(row.attempts <= row.max_attempts, JSON.stringify(row));
        assert.ok(successes <= 1, `${successes} successes`);
        assert.equal(row.status === 'completed', successes === 1, JSON.stringify(row));
      }
      const verified = await setup.gw.store.db.selectFrom('audit_log').select('type').where('type', '=', 'stepup.factor_verified').execute();
      assert.equal(verified.length, results.filter((r) => r.status === 200).length);
      const chain = await verifyAuditChain(setup.gw.store.db);
      assert.ok(chain.ok, JSON.stringify(chain));
    });
  });
}
