import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Response } from 'supertest';
import { purgeExpiredRecords } from '../../src/flows/maintenance.ts';
import { createUser, loginThrottleKey, normaliseUsername, unlockLogin } from '../../src/flows/users.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * The per-login-name lockout: charged before the comparison with one conditional upsert,
 * exact under parallel attempts, shared by every gateway process on one database, lifted
 * by time or by an operator, and identical for unknown names.
 */

const PASSWORD = 'orchid-lantern-93';
const MAX = 3;
const LOCK_SECONDS = 60;
const CONFIG = { login: { maxFailures: MAX, lockSeconds: LOCK_SECONDS, delayAfterFailures: 100, delayBaseSeconds: 0 } };

function withoutRequestId(res: Response): Record<string, unknown> {
  const { request_id: _ignored, ...rest } = JSON.parse(res.text) as Record<string, unknown>;
  return rest;
}

for (const dialect of testDialects()) {
  describe(`login lockout (${dialect})`, () => {
    let tg: TestGateway;

    before(async () => {
      tg = await createTestGateway({ dialect, config: CONFIG });
    });
    after(async () => {
      await tg.close();
    });

    const login = (username: string, password: string, on: TestGateway = tg) => on.http().post('/v1/login').send({ username, password });
    const throttleRow = (username: string) =>
      tg.gw.store.db.selectFrom('login_throttle').selectAll().where('key', '=', loginThrottleKey(tg.gw, normaliseUsername(username))).executeTakeFirst();
    const user = (username: string) => createUser(tg.gw, { username, password: PASSWORD }, { actor: 'cli' });

    it(`locks a name after ${MAX} consecutive failures and then refuses even the right password`, async () => {
      const u = await user('ivan');
      for (let i = 1; i <= MAX; i += 1) {
        const res = await login('ivan', `wrong-password-${i}`);
        assert.equal(res.status, 401, `attempt ${i}`);
        assert.equal((await throttleRow('ivan'))?.failures, i);
      }
      const locked = await login('ivan', PASSWORD);
      assert.equal(locked.status, 429);
      assert.equal(locked.body.code, 'too_many_requests');
      assert.equal(locked.headers['retry-after'], String(LOCK_SECONDS));
      const row = await throttleRow('ivan');
      assert.equal(row?.failures, MAX, 'a refused attempt is not compared and not counted');
      assert.equal(Number(row?.locked_until), tg.clock.now().getTime() + LOCK_SECONDS * 1000);

      const lockedEvents = await tg.gw.store.db.selectFrom('audit_log').selectAll().where('type', '=', 'login.locked').where('subject', '=', u.id).execute();
      assert.equal(lockedEvents.length, 1);
      const refused = await tg.gw.store.db.selectFrom('audit_log').selectAll().where('type', '=', 'login.failed').where('subject', '=', u.id).execute();
      assert.ok(refused.some((r) => JSON.parse(r.data).reason === 'locked'));
    });

    it('locks unknown names exactly like real ones (no enumeration)', async () => {
      await user('judy');
      const real: Response[] = [];
      const fake: Response[] = [];
      for (let i = 0; i <= MAX; i += 1) {
        real.push(await login('judy', 'wrong-password-x'));
        fake.push(await login('judy-does-not-exist', 'wrong-password-x'));
      }
      assert.deepEqual(real.map((r) => r.status), [401, 401, 401, 429]);
      assert.deepEqual(fake.map((r) => r.status), [401, 401, 401, 429]);
      assert.deepEqual(withoutRequestId(fake[MAX] as Response), withoutRequestId(real[MAX] as Response));
      assert.equal((fake[MAX] as Response).headers['retry-after'], (real[MAX] as Response).headers['retry-after']);
    });

    it(`charges exactly ${MAX} of ${2 * MAX} parallel wrong attempts; the rest are refused without comparison`, async () => {
      await user('kim');
      const results = await Promise.all(Array.from({ length: 2 * MAX }, (_, i) => login('kim', `parallel-wrong-${i}`)));
      const statuses = results.map((r) => r.status).sort();
      assert.deepEqual(statuses, [...Array(MAX).fill(401), ...Array(MAX).fill(429)]);
      const row = await throttleRow('kim');
      assert.equal(row?.failures, MAX);
      assert.ok(row?.locked_until !== null);
    });

    it('is exact for an unknown name under parallel attempts too', async () => {
      const results = await Promise.all(Array.from({ length: 2 * MAX }, () => login('mallory-unknown', 'parallel-wrong')));
      assert.equal(results.filter((r) => r.status === 401).length, MAX);
      assert.equal(results.filter((r) => r.status === 429).length, MAX);
      assert.equal((await throttleRow('mallory-unknown'))?.failures, MAX);
    });

    it('lifts the lock after lockSeconds; counting then starts again', async () => {
      await user('leo');
      for (let i = 0; i < MAX; i += 1) await login('leo', 'wrong-password');
      assert.equal((await login('leo', PASSWORD)).status, 429);
      tg.clock.advance(LOCK_SECONDS - 1);
      assert.equal((await login('leo', PASSWORD)).status, 429, 'still locked a second before the end');
      tg.clock.advance(1);
      assert.equal((await login('leo', 'wrong-again')).status, 401);
      assert.equal((await throttleRow('leo'))?.failures, 1, 'counting restarted');
      assert.equal((await throttleRow('leo'))?.locked_until, null);
      assert.equal((await login('leo', PASSWORD)).status, 200);
      assert.equal(await throttleRow('leo'), undefined, 'reset on success');
    });

    it('resets the count on success (only consecutive failures lock)', async () => {
      await user('mia');
      for (let round = 0; round < 3; round += 1) {
        for (let i = 0; i < MAX - 1; i += 1) assert.equal((await login('mia', 'wrong-password')).status, 401);
        assert.equal((await login('mia', PASSWORD)).status, 200);
      }
    });

    it('the last allowed attempt still succeeds with the right password', async () => {
      await user('ned');
      for (let i = 0; i < MAX - 1; i += 1) await login('ned', 'wrong-password');
      assert.equal((await login('ned', PASSWORD)).status, 200);
      assert.equal(await throttleRow('ned'), undefined);
    });

    it('names tried and then left alone for lockSeconds are forgotten; a lock in force and recent failures are kept', async () => {
      // A scanner trying made-up names must not grow the table for ever: a row without a
      // lock in force and without a failure for lockSeconds is dropped by maintenance.
      for (let i = 0; i < MAX - 1; i += 1) await login('scanner-guess-1', 'x');
      for (let i = 0; i < MAX; i += 1) await login('scanner-guess-2', 'x');
      tg.clock.advance(LOCK_SECONDS / 2);
      await login('scanner-guess-3', 'x');
      tg.clock.advance(LOCK_SECONDS / 2);
      for (let i = 0; i < MAX; i += 1) await login('scanner-guess-4', 'x');
      tg.clock.advance(1);
      await purgeExpiredRecords(tg.gw);
      const kept = async (name: string) => (await throttleRow(name)) !== undefined;
      assert.deepEqual(
        { idle: await kept('scanner-guess-1'), lockRanOut: await kept('scanner-guess-2'), recent: await kept('scanner-guess-3'), locked: await kept('scanner-guess-4') },
        { idle: false, lockRanOut: false, recent: true, locked: true },
      );
      assert.equal((await login('scanner-guess-4', 'x')).status, 429, 'the lock still holds');
    });

    it('an operator unlock clears the lock at once and is audited', async () => {
      const u = await user('olga');
      for (let i = 0; i < MAX; i += 1) await login('olga', 'wrong-password');
      assert.equal((await login('olga', PASSWORD)).status, 429);
      await unlockLogin(tg.gw, u.id, { actor: 'cli' }, 'verified by phone');
      assert.equal((await login('olga', PASSWORD)).status, 200);
      const events = await tg.gw.store.db.selectFrom('audit_log').selectAll().where('type', '=', 'login.unlocked').where('subject', '=', u.id).execute();
      assert.equal(events.length, 1);
      assert.equal(JSON.parse(events[0]?.data ?? '{}').was_locked, true);
      assert.equal(JSON.parse(events[0]?.data ?? '{}').reason, 'verified by phone');
    });

    it('two gateway processes on one database share the counter', async () => {
      await user('pat');
      const second = await createTestGateway({ dialect, database: tg.database, clock: tg.clock, config: CONFIG });
      try {
        const statuses: number[] = [];
        for (let i = 0; i <= MAX; i += 1) {
          const on = i % 2 === 0 ? tg : second;
          statuses.push((await login('pat', `wrong-${i}`, on)).status);
        }
        assert.deepEqual(statuses, [...Array(MAX).fill(401), 429]);
        // Either process refuses now, even the right password.
        assert.equal((await login('pat', PASSWORD, tg)).status, 429);
        assert.equal((await login('pat', PASSWORD, second)).status, 429);
        // And both see the lock end.
        tg.clock.advance(LOCK_SECONDS);
        assert.equal((await login('pat', PASSWORD, second)).status, 200);
        assert.equal(await throttleRow('pat'), undefined);

        // Parallel attempts split across both processes are still charged exactly.
        const results = await Promise.all(Array.from({ length: 2 * MAX }, (_, i) => login('pat', `split-${i}`, i % 2 === 0 ? tg : second)));
        assert.equal(results.filter((r) => r.status === 401).length, MAX);
        assert.equal(results.filter((r) => r.status === 429).length, MAX);
        assert.equal((await throttleRow('pat'))?.failures, MAX);
      } finally {
        await second.close();
      }
    });
  });
}
