import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { importTokenFile } from '../../src/flows/hardware-token-import.ts';
import { assignToken } from '../../src/flows/hardware-tokens.ts';
import { createUser } from '../../src/flows/users.ts';
import { appsOf, createTestGateway, type SecondGateway, secondGatewayOnPostgres, type TestGateway } from '../helpers/gateway.ts';
import { needOathtool, oathHotp, randomSeedHex } from '../helpers/hardware-tokens.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * A helpdesk assign or replace (a code read off a token in stock) is charged BEFORE the code
 * is compared, per token (assignMaxFailures wrong codes in a row) and per operator
 * (assignActorMaxFailures): at either limit the operator's attempt is refused (429,
 * Retry-After) without comparing anything — even the right code — until assignLockSeconds
 * have passed. Failures, locks and refusals are audited. Each count is one conditional
 * UPDATE, so parallel guesses (in two gateway processes on one PostgreSQL as well) compare
 * exactly the budget, never more.
 */

const PASSWORD = 'a long enough passphrase 7';
const LIMIT = 3;
const OPERATOR_LIMIT = 5;
const LOCK_SECONDS = 600;
const PARALLEL = 16;

type Desk = { id: string; cookie: string[]; csrf: string };

for (const dialect of testDialects()) {
  describe(`helpdesk token assign/replace is throttled (${dialect})`, () => {
    let t: TestGateway;
    /** PostgreSQL: a second gateway process on the same database. */
    let second: SecondGateway | undefined;
    let aliceId: string;
    const seeds: Record<string, string> = {};
    let n = 0;
    let desks = 0;

    async function stock(): Promise<string> {
      n += 1;
      const serial = `AS-${n}`;
      seeds[serial] = randomSeedHex();
      await importTokenFile(t.gw, { data: Buffer.from(`${serial},${seeds[serial]},hotp,6,0`), fileName: `${serial}.csv`, source: 'cli' }, { actor: 'test' });
      return serial;
    }

    /** A helpdesk operator of its own per test: the per-operator count is the account's. */
    async function desk(): Promise<Desk> {
      desks += 1;
      const username = `desk${desks}`;
      const id = (await createUser(t.gw, { username, password: PASSWORD, roles: ['helpdesk'] }, { actor: 'test' })).id;
      const res = await t.http().post('/v1/login').send({ username, password: PASSWORD }).expect(200);
      return { id, cookie: res.headers['set-cookie'] as unknown as string[], csrf: res.body.csrf_token as string };
    }

    function assign(d: Desk, serial: string, code: string, app = t.app) {
      return supertest(app).post(`/v1/admin/hardware-tokens/${serial}/assign`).set('Cookie', d.cookie).set('X-CSRF-Token', d.csrf).send({ user_id: aliceId, code, reason: 'issued at the desk' });
    }

    function replace(d: Desk, serial: string, newSerial: string, code: string) {
      return supertest(t.app).post(`/v1/admin/hardware-tokens/${serial}/replace`).set('Cookie', d.cookie).set('X-CSRF-Token', d.csrf).send({ new_serial: newSerial, code, old_state: 'lost', reason: 'lost on the train' });
    }

    /** A code the token does not show now (far outside the look-ahead window). */
    const wrong = (serial: string, i = 0) => oathHotp(seeds[serial] as string, 500 + i);
    const right = (serial: string) => oathHotp(seeds[serial] as string, 0);

    async function events(type: string, match: (d: Record<string, unknown>) => boolean): Promise<Record<string, unknown>[]> {
      const rows = await t.gw.store.db.selectFrom('audit_log').select(['data', 'actor']).where('type', '=', type).orderBy('seq').execute();
      return rows.map((r) => ({ ...(JSON.parse(r.data) as Record<string, unknown>), actor: r.actor })).filter(match);
    }
    const ofSerial = (serial: string) => (d: Record<string, unknown>) => d.serial === serial;
    const ofActor = (id: string) => (d: Record<string, unknown>) => d.actor === id;

    async function tokenRow(serial: string) {
      return t.gw.store.db.selectFrom('hardware_tokens').select(['assign_failures', 'assign_locked_until', 'state', 'counter', 'user_id']).where('serial', '=', serial).executeTakeFirstOrThrow();
    }

    before(async () => {
      t = await createTestGateway({
        dialect,
        config: { hardwareTokens: { assignMaxFailures: LIMIT, assignActorMaxFailures: OPERATOR_LIMIT, assignLockSeconds: LOCK_SECONDS } },
      });
      aliceId = (await createUser(t.gw, { username: 'alice', password: PASSWORD }, { actor: 'test' })).id;
      second = await secondGatewayOnPostgres(t);
    });
    after(async () => {
      await second?.close();
      await t.close();
    });

    it(`per token: ${LIMIT} wrong codes, then 429 without comparing — even the right code, from another operator too — until the lock runs out`, async (tc) => {
      if (needOathtool(tc)) return;
      const [a, b] = [await desk(), await desk()];
      const serial = await stock();
      for (let i = 0; i < LIMIT; i += 1) {
        const r = await assign(a, serial, wrong(serial, i));
        assert.equal(r.status, 400, r.text);
        assert.equal(r.body.code, 'token_code_invalid');
        assert.equal(r.body.invalid_params[0].pointer, '/code');
      }
      assert.equal(Number((await tokenRow(serial)).assign_failures), LIMIT);
      for (const who of [a, b]) {
        const locked = await assign(who, serial, right(serial));
        assert.equal(locked.status, 429, locked.text);
        assert.equal(locked.headers['content-type'], 'application/problem+json; charset=utf-8');
        assert.equal(locked.body.code, 'too_many_requests');
        assert.equal(locked.headers['retry-after'], String(LOCK_SECONDS));
      }
      const still = await tokenRow(serial);
      assert.deepEqual([still.state, Number(still.counter), still.user_id], ['unassigned', 0, null], 'the refused right code assigned and moved nothing');
      assert.equal(Number(still.assign_locked_until), t.clock.now().getTime() + LOCK_SECONDS * 1000);

      const failed = await events('hardware_token.assign_failed', ofSerial(serial));
      assert.deepEqual(failed.map((d) => [d.failures, d.limit]), [[1, LIMIT], [2, LIMIT], [3, LIMIT]]);
      const locks = await events('hardware_token.assign_locked', ofSerial(serial));
      assert.deepEqual(locks.map((d) => [d.scope, d.failures, d.lockSeconds]), [['token', LIMIT, LOCK_SECONDS]]);
      const refused = await events('hardware_token.assign_refused', ofSerial(serial));
      assert.deepEqual(refused.map((d) => [d.scope, d.actor]), [['token', a.id], ['token', b.id]]);
      for (const d of [...failed, ...refused]) assert.ok(!JSON.stringify(d).includes(right(serial)), 'no code in the audit log');

      t.clock.advance(LOCK_SECONDS - 1);
      assert.equal((await assign(b, serial, right(serial))).status, 429);
      t.clock.advance(1);
      const ok = await assign(b, serial, right(serial));
      assert.equal(ok.status, 200, ok.text);
      const done = await tokenRow(serial);
      assert.deepEqual([done.state, done.user_id, Number(done.assign_failures), done.assign_locked_until], ['assigned', aliceId, 0, null], 'the assignment clears the count');
    });

    it(`per operator: ${OPERATOR_LIMIT} wrong codes over several tokens lock that operator (not the others); a right code gives back only its own charge`, async (tc) => {
      if (needOathtool(tc)) return;
      const [a, b] = [await desk(), await desk()];
      const tokens = [await stock(), await stock(), await stock(), await stock()];
      // Below every token's limit, but OPERATOR_LIMIT - 1 wrong codes for the operator…
      const spread = [tokens[0], tokens[0], tokens[1], tokens[1]] as string[];
      for (const [i, serial] of spread.entries()) assert.equal((await assign(a, serial, wrong(serial, i))).status, 400);
      // …then a right code (assigned; its own charge given back, the wrong ones stand)…
      assert.equal((await assign(a, tokens[2] as string, right(tokens[2] as string))).status, 200);
      // …then one more wrong code reaches the operator's limit.
      const last = await assign(a, tokens[3] as string, wrong(tokens[3] as string));
      assert.equal(last.status, 400, last.text);
      const locked = await assign(a, tokens[3] as string, right(tokens[3] as string));
      assert.equal(locked.status, 429, locked.text);
      assert.equal(locked.headers['retry-after'], String(LOCK_SECONDS));
      assert.equal((await tokenRow(tokens[3] as string)).state, 'unassigned');
      assert.equal(Number((await tokenRow(tokens[3] as string)).assign_failures), 1, "an attempt refused for the operator does not touch the token's count");
      const lock = await events('hardware_token.assign_locked', ofActor(a.id));
      assert.deepEqual(lock.map((d) => [d.scope, d.failures]), [['operator', OPERATOR_LIMIT]]);
      assert.deepEqual((await events('hardware_token.assign_refused', ofActor(a.id))).map((d) => d.scope), ['operator']);
      // Another operator is not affected.
      assert.equal((await assign(b, tokens[3] as string, right(tokens[3] as string))).status, 200);
      // The operator's lock runs out; the count starts again.
      t.clock.advance(LOCK_SECONDS);
      const fresh = await stock();
      assert.equal((await assign(a, fresh, right(fresh))).status, 200);
    });

    it('replace: the new token is throttled the same way, and the old one stays assigned', async (tc) => {
      if (needOathtool(tc)) return;
      const d = await desk();
      const old = await stock();
      await assignToken(t.gw, { actor: 'test', by: 'helpdesk' }, { serial: old, userId: aliceId, code: right(old), reason: 'issued' });
      const fresh = await stock();
      for (let i = 0; i < LIMIT; i += 1) {
        const r = await replace(d, old, fresh, wrong(fresh, i));
        assert.equal(r.status, 400, r.text);
        assert.equal(r.body.code, 'token_code_invalid');
      }
      const locked = await replace(d, old, fresh, right(fresh));
      assert.equal(locked.status, 429, locked.text);
      assert.equal(locked.headers['retry-after'], String(LOCK_SECONDS));
      assert.equal((await tokenRow(old)).state, 'assigned', 'nothing replaced');
      assert.equal((await tokenRow(fresh)).state, 'unassigned');
      assert.equal((await events('hardware_token.assign_refused', ofSerial(fresh))).length, 1);
    });

    it('bad input is refused before anything is charged', async () => {
      const d = await desk();
      const serial = await stock();
      const r = await supertest(t.app).post(`/v1/admin/hardware-tokens/${serial}/assign`).set('Cookie', d.cookie).set('X-CSRF-Token', d.csrf).send({ user_id: aliceId, code: 12, reason: 'issued' });
      assert.equal(r.status, 400, r.text);
      assert.equal(r.body.code, 'validation_failed');
      assert.equal((await assign(d, 'NO-SUCH-SERIAL', '123456')).status, 404);
      assert.equal(Number((await tokenRow(serial)).assign_failures), 0);
      const op = await t.gw.store.db.selectFrom('hardware_token_assign_throttle').select('failures').where('actor', '=', d.id).executeTakeFirst();
      assert.equal(op, undefined, 'no attempt charged to the operator');
    });

    it(`${PARALLEL} parallel wrong codes for one token${dialect === 'postgres' ? ' across two gateway processes' : ''}: exactly ${LIMIT} are compared, the rest refused`, async (tc) => {
      if (needOathtool(tc)) return;
      const serial = await stock();
      const apps = appsOf(t, second);
      // One operator per request pair, so only the token's budget binds.
      const ops = await Promise.all(Array.from({ length: PARALLEL / 2 }, () => desk()));
      const results = await Promise.all(Array.from({ length: PARALLEL }, (_, i) => assign(ops[i % ops.length] as Desk, serial, wrong(serial, i), apps[i % apps.length])));
      const statuses = results.map((r) => r.status);
      assert.equal(statuses.filter((s) => s === 400).length, LIMIT, statuses.join());
      assert.equal(statuses.filter((s) => s === 429).length, PARALLEL - LIMIT, statuses.join());
      assert.equal(Number((await tokenRow(serial)).assign_failures), LIMIT);
      assert.equal((await events('hardware_token.assign_failed', ofSerial(serial))).length, LIMIT);
      assert.equal((await events('hardware_token.assign_locked', ofSerial(serial))).length, 1);
      assert.equal((await events('hardware_token.assign_refused', ofSerial(serial))).length, PARALLEL - LIMIT);
    });

    it(`${PARALLEL} parallel wrong codes from one operator over ${PARALLEL} tokens${dialect === 'postgres' ? ' across two gateway processes' : ''}: exactly ${OPERATOR_LIMIT} are compared`, async (tc) => {
      if (needOathtool(tc)) return;
      const d = await desk();
      const serials: string[] = [];
      for (let i = 0; i < PARALLEL; i += 1) serials.push(await stock());
      const apps = appsOf(t, second);
      const results = await Promise.all(serials.map((serial, i) => assign(d, serial, wrong(serial), apps[i % apps.length])));
      const statuses = results.map((r) => r.status);
      assert.equal(statuses.filter((s) => s === 400).length, OPERATOR_LIMIT, statuses.join());
      assert.equal(statuses.filter((s) => s === 429).length, PARALLEL - OPERATOR_LIMIT, statuses.join());
      assert.equal((await events('hardware_token.assign_failed', ofActor(d.id))).length, OPERATOR_LIMIT);
      assert.equal((await events('hardware_token.assign_locked', ofActor(d.id))).length, 1);
      const op = await t.gw.store.db.selectFrom('hardware_token_assign_throttle').select('failures').where('actor', '=', d.id).executeTakeFirstOrThrow();
      assert.equal(Number(op.failures), OPERATOR_LIMIT);
    });
  });
}
