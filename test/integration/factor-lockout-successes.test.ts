import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { appsOf, createTestGateway, type SecondGateway, secondGatewayOnPostgres, type TestGateway } from '../helpers/gateway.ts';
import { makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * "A burst of correct codes can lock a factor" — checked, and it cannot. The step-up factor's
 * failure count is charged BEFORE the secret is compared (one conditional UPDATE:
 * `failures < maxFailures and not locked`), and a success resets it to 0 (and clears the
 * lock) in its guarded success update. So:
 *
 *   - correct verifications one after another (a user doing many payments in a minute) each
 *     charge and then reset: the count never climbs, however many there are;
 *   - maxFailures wrong ones in a row lock the factor, exactly as many being compared, also
 *     when right ones come in between (a right one ends the row: the limit is failures in a
 *     row, as documented) and when they arrive at once in two gateway processes;
 *   - correct ones at once: each success's reset follows its own charge, so the last write to
 *     the count is a reset — the burst leaves the factor unlocked with no failures. While
 *     more than maxFailures comparisons are in flight, an attempt beyond them is refused
 *     (`factor_locked`) without being compared: that bound on comparisons in flight is what
 *     keeps parallel guesses to maxFailures, and it lasts only while they are in flight.
 *
 * The slow factor (password: argon2, compared outside the charging transaction) is the one
 * where charges can be in flight; one-time codes are compared inside it.
 */

const ACTION = 'payment_code.issue';
const LIMIT = 3;
const PARALLEL = 12;
const WRONG = 'not the password at all 9';

for (const dialect of testDialects()) {
  describe(`correct verifications never lock a factor; wrong ones lock it exactly (${dialect})`, () => {
    let t: TestGateway;
    /** PostgreSQL: a second gateway process on the same database. */
    let second: SecondGateway | undefined;
    let pay: Awaited<ReturnType<typeof makeClient>>;
    let users = 0;

    async function user(): Promise<{ name: string; factorId: string }> {
      users += 1;
      const name = `payer${users}`;
      const u = await makeUser(t.gw, name);
      const f = await t.gw.store.db.selectFrom('factors').select('id').where('user_id', '=', u.id).where('type', '=', 'password').executeTakeFirstOrThrow();
      return { name, factorId: f.id };
    }
    async function stepUp(subject: string): Promise<{ id: string; ticket: string }> {
      const res = await supertest(t.app).post('/v1/stepup').set('Authorization', pay.basic).send({ subject, action: ACTION, context: { amount: '12.00', currency: 'CNY', payee: 'shop-42' } });
      assert.equal(res.status, 201, res.text);
      return { id: res.body.stepup_id as string, ticket: res.body.ticket as string };
    }
    async function pay1(subject: string, password: string, app = t.app) {
      const s = await stepUp(subject);
      return supertest(app).post(`/v1/stepup/${s.id}/verify`).set('Authorization', `Ticket ${s.ticket}`).send({ factor: 'password', password });
    }
    async function factor(id: string) {
      const r = await t.gw.store.db.selectFrom('factors').select(['failures', 'locked_until']).where('id', '=', id).executeTakeFirstOrThrow();
      return { failures: Number(r.failures), lockedUntil: r.locked_until === null ? null : Number(r.locked_until) };
    }
    async function failedEvents(factorId: string): Promise<string[]> {
      const rows = await t.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'stepup.factor_failed').orderBy('seq').execute();
      return rows.map((r) => JSON.parse(r.data) as { factorId: string; reason: string }).filter((d) => d.factorId === factorId).map((d) => d.reason);
    }

    before(async () => {
      t = await createTestGateway({ dialect, config: { factors: { maxFailures: LIMIT, lockSeconds: 900 } } });
      await setPolicies(t.gw, [{ id: 'pwd', action: ACTION, priority: 10, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' }]);
      pay = await makeClient(t.gw, 'payment-code service', [ACTION]);
      second = await secondGatewayOnPostgres(t);
    });
    after(async () => {
      await second?.close();
      await t.close();
    });

    it(`${4 * LIMIT} correct verifications in a row (many payments in a minute) all complete and leave no failure`, async () => {
      const u = await user();
      for (let i = 0; i < 4 * LIMIT; i += 1) {
        const r = await pay1(u.name, PASSWORD);
        assert.equal(r.status, 200, `payment ${i + 1}: ${r.text}`);
        assert.equal(r.body.status, 'completed');
      }
      assert.deepEqual(await factor(u.factorId), { failures: 0, lockedUntil: null });
    });

    it(`${LIMIT} wrong in a row lock it, exactly as before: right ones in between end the row, never reset a lock`, async () => {
      const u = await user();
      // Up to LIMIT - 1 wrong, then a right one: the row ends.
      for (let round = 0; round < 3; round += 1) {
        for (let i = 0; i < LIMIT - 1; i += 1) assert.equal((await pay1(u.name, WRONG)).body.code, 'factor_invalid');
        assert.equal((await factor(u.factorId)).failures, LIMIT - 1);
        assert.equal((await pay1(u.name, PASSWORD)).status, 200);
        assert.deepEqual(await factor(u.factorId), { failures: 0, lockedUntil: null });
      }
      // LIMIT wrong in a row: locked, and the right password is then refused without being compared.
      for (let i = 0; i < LIMIT; i += 1) assert.equal((await pay1(u.name, WRONG)).body.code, 'factor_invalid');
      const locked = await pay1(u.name, PASSWORD);
      assert.equal(locked.status, 423, locked.text);
      assert.equal(locked.body.code, 'factor_locked');
      assert.deepEqual(await factor(u.factorId), { failures: LIMIT, lockedUntil: t.clock.now().getTime() + 900_000 });
      const reasons = await failedEvents(u.factorId);
      assert.equal(reasons.filter((r) => r === 'invalid').length, 3 * (LIMIT - 1) + LIMIT, 'every wrong one compared and audited');
      assert.deepEqual(reasons.slice(-1), ['locked']);
      t.clock.advance(900);
      assert.equal((await pay1(u.name, PASSWORD)).status, 200, 'the lock runs out');
    });

    it(`${PARALLEL} wrong at once${dialect === 'postgres' ? ' in two gateway processes' : ''}: exactly ${LIMIT} are compared, the rest refused as locked`, async () => {
      const u = await user();
      const apps = appsOf(t, second);
      const results = await Promise.all(Array.from({ length: PARALLEL }, (_, i) => pay1(u.name, WRONG, apps[i % apps.length])));
      const codes = results.map((r) => r.body.code as string);
      assert.equal(codes.filter((c) => c === 'factor_invalid').length, LIMIT, codes.join());
      assert.equal(codes.filter((c) => c === 'factor_locked').length, PARALLEL - LIMIT, codes.join());
      assert.equal((await failedEvents(u.factorId)).filter((r) => r === 'invalid').length, LIMIT);
      assert.equal((await factor(u.factorId)).failures, LIMIT);
    });

    it(`wrong and right at once${dialect === 'postgres' ? ' in two gateway processes' : ''}: never more than ${LIMIT} wrong ones compared while the right ones are in flight`, async () => {
      const u = await user();
      const apps = appsOf(t, second);
      const results = await Promise.all(Array.from({ length: PARALLEL }, (_, i) => pay1(u.name, i % 2 === 0 ? WRONG : PASSWORD, apps[i % apps.length])));
      const wrongCompared = (await failedEvents(u.factorId)).filter((r) => r === 'invalid').length;
      const completed = results.filter((r) => r.status === 200).length;
      for (const r of results) assert.ok(r.status === 200 || ['factor_invalid', 'factor_locked'].includes(r.body.code as string), r.text);
      // Each right one resets the row it ends, so wrong ones compared are at most LIMIT per
      // right one that completed, plus the LIMIT of the last row (as sequentially).
      assert.ok(wrongCompared <= LIMIT * (completed + 1), `${wrongCompared} wrong compared with ${completed} right`);
    });

    it(`${PARALLEL} correct at once${dialect === 'postgres' ? ' in two gateway processes' : ''}: none is compared as wrong, and the burst leaves the factor unlocked with no failures`, async (tc) => {
      const u = await user();
      const apps = appsOf(t, second);
      const results = await Promise.all(Array.from({ length: PARALLEL }, (_, i) => pay1(u.name, PASSWORD, apps[i % apps.length])));
      for (const r of results) assert.ok(r.status === 200 || r.body.code === 'factor_locked', r.text);
      const completed = results.filter((r) => r.status === 200).length;
      assert.ok(completed >= LIMIT, 'at least a full budget of them completes');
      tc.diagnostic(`${completed} completed, ${PARALLEL - completed} refused while ${LIMIT} comparisons were in flight`);
      assert.deepEqual(await factor(u.factorId), { failures: 0, lockedUntil: null }, 'no lock left behind');
      assert.equal((await failedEvents(u.factorId)).filter((r) => r === 'invalid').length, 0);
      // And the next payment goes through at once.
      assert.equal((await pay1(u.name, PASSWORD)).status, 200);
    });
  });
}
