import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type SqlBool, sql } from 'kysely';
import type { Executor } from '../../src/store/database.ts';
import * as repo from '../../src/store/users-repository.ts';
import * as sessions from '../../src/store/sessions-repository.ts';
import { createTestStore } from '../helpers/stores.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * The sign-in statements are fixed SQL (src/store/fixed-sql.ts). These tests hold them to
 * what Kysely's builder did before, on both databases: the builder versions are kept here
 * as the reference, and both run the same sequences on twin keys and rows.
 */
async function referenceCharge(ex: Executor, key: string, o: repo.ChargeOptions) {
  const expired = sql<SqlBool>`(login_throttle.locked_until is not null and login_throttle.locked_until <= ${o.nowMs})`;
  const next = sql<number>`(case when ${expired} then 1 else login_throttle.failures + 1 end)`;
  const row = await ex
    .insertInto('login_throttle')
    .values({ key, failures: 1, locked_until: 1 >= o.maxFailures ? o.lockUntilMs : null, last_failed_at: o.nowMs })
    .onConflict((oc) =>
      oc
        .column('key')
        .doUpdateSet({
          failures: next,
          locked_until: sql<number | null>`(case when ${next} >= ${o.maxFailures} then cast(${o.lockUntilMs} as bigint) else null end)`,
          last_failed_at: o.nowMs,
        })
        .where(sql<SqlBool>`((login_throttle.locked_until is null and login_throttle.failures < ${o.maxFailures}) or ${expired})`),
    )
    .returning(['failures', 'locked_until'])
    .executeTakeFirst();
  if (row === undefined) return undefined;
  return { failures: Number(row.failures), lockedUntil: row.locked_until === null ? null : Number(row.locked_until) };
}

for (const dialect of testDialects()) {
  describe(`sign-in statements as fixed SQL (${dialect})`, () => {
    let t: Awaited<ReturnType<typeof createTestStore>>;
    before(async () => {
      t = await createTestStore(dialect);
    });
    after(async () => {
      await t.cleanup();
    });

    it('the attempt charge gives what the builder gave, step by step: counting, locking, refusing, expiry, limits of 1', async () => {
      const db = t.store.db;
      // [nowMs, maxFailures, lockUntilMs]: up to the lock, refusals while locked, after expiry, a lowered limit, a limit of 1.
      const steps: [number, number, number][] = [
        [1000, 3, 9000], [1100, 3, 9100], [1200, 3, 9200], [1300, 3, 9300], [8999, 3, 9999],
        [9000, 3, 19000], [9001, 3, 19001], [9002, 2, 19002], [9003, 2, 19003], [19002, 2, 29002],
        [30000, 1, 40000], [30001, 1, 40001], [40001, 1, 50001], [50002, 5, 60002], [50003, 5, 60003],
      ];
      for (const [i, [nowMs, maxFailures, lockUntilMs]] of steps.entries()) {
        const o = { nowMs, maxFailures, lockUntilMs };
        const expected = await referenceCharge(db, 'ref', o);
        const actual = await repo.chargeLoginAttempt(db, 'fixed', o);
        assert.deepEqual(actual, expected, `step ${i}`);
        const rows = await db.selectFrom('login_throttle').select(['key', 'failures', 'locked_until', 'last_failed_at']).orderBy('key').execute();
        const [fixed, ref] = rows.map(({ key: _key, ...rest }) => ({ ...rest, failures: Number(rest.failures), locked_until: rest.locked_until === null ? null : Number(rest.locked_until), last_failed_at: Number(rest.last_failed_at) }));
        assert.deepEqual(fixed, ref, `rows after step ${i}`);
      }
      assert.equal(await repo.clearLoginThrottle(db, 'fixed'), true);
      assert.equal(await repo.clearLoginThrottle(db, 'fixed'), false);
    });

    it('the user with their password factor: the same row as the builder gave, with and without a factor, and no other factor type', async () => {
      const db = t.store.db;
      const now = 5_000;
      await db.insertInto('users').values([
        { id: 'usr_a', username: 'alice', display_name: 'Alice', roles: '["user"]', groups: '[]', status: 'active', created_at: now, updated_at: now + 1 },
        { id: 'usr_b', username: 'bob', display_name: 'Bob', roles: '[]', groups: '["g"]', status: 'disabled', created_at: now, updated_at: now },
      ]).execute();
      const factor = { user_id: 'usr_a', label: '', secret_sealed: null, params: '{}', counter: 0, failures: 2, locked_until: null, updated_at: now, last_used_at: null };
      await db.insertInto('factors').values([
        { ...factor, id: 'fac_pw', type: 'password', status: 'active', secret_hash: '$argon2id$x', created_at: now + 10, locked_until: now + 99 },
        { ...factor, id: 'fac_totp', type: 'totp', status: 'active', secret_hash: null, created_at: now + 20 },
      ]).execute();
      const alice = await repo.findUserWithPassword(db, 'alice');
      assert.equal(alice?.user.id, 'usr_a');
      assert.equal(alice?.user.status, 'active');
      assert.deepEqual(alice?.factor && { id: alice.factor.id, type: alice.factor.type, secret_hash: alice.factor.secret_hash, failures: Number(alice.factor.failures), locked_until: Number(alice.factor.locked_until), created_at: Number(alice.factor.created_at) }, { id: 'fac_pw', type: 'password', secret_hash: '$argon2id$x', failures: 2, locked_until: now + 99, created_at: now + 10 });
      const bob = await repo.findUserWithPassword(db, 'bob');
      assert.equal(bob?.user.status, 'disabled');
      assert.equal(bob?.factor, undefined);
      assert.equal(await repo.findUserWithPassword(db, 'nobody'), undefined);
      assert.equal(await repo.findUserWithPassword(db, 'ALICE'), undefined, 'names are normalised by the caller; the lookup is exact');

      await repo.markFactorUsed(db, 'fac_pw', now + 500);
      const used = await db.selectFrom('factors').select(['id', 'last_used_at']).orderBy('id').execute();
      assert.deepEqual(used.map((r) => [r.id, r.last_used_at === null ? null : Number(r.last_used_at)]), [['fac_pw', now + 500], ['fac_totp', null]]);
    });

    it('sessions: inserted with every column, deleted by id, and only the user\'s expired or idle ones swept', async () => {
      const db = t.store.db;
      const base = { user_id: 'usr_a', csrf_token: 'c', created_at: 1, auth_time: 1, amr: '["pwd"]', user_agent: null, ip: null };
      await sessions.insertSession(db, { ...base, id_hash: 'live', last_seen_at: 900, expires_at: 5000 });
      await sessions.insertSession(db, { ...base, id_hash: 'expired', last_seen_at: 900, expires_at: 1000 });
      await sessions.insertSession(db, { ...base, id_hash: 'idle', last_seen_at: 100, expires_at: 5000 });
      await sessions.insertSession(db, { ...base, user_id: 'usr_b', id_hash: 'other', last_seen_at: 100, expires_at: 1000 });
      const row = await db.selectFrom('sessions').selectAll().where('id_hash', '=', 'live').executeTakeFirstOrThrow();
      assert.deepEqual({ ...row, created_at: Number(row.created_at), last_seen_at: Number(row.last_seen_at), expires_at: Number(row.expires_at), auth_time: Number(row.auth_time) }, { ...base, id_hash: 'live', last_seen_at: 900, expires_at: 5000 });
      assert.equal(await sessions.deleteExpiredUserSessions(db, 'usr_a', 1000, 500), 2);
      assert.deepEqual((await db.selectFrom('sessions').select('id_hash').orderBy('id_hash').execute()).map((r) => r.id_hash), ['live', 'other']);
      assert.equal(await sessions.deleteSession(db, 'live'), true);
      assert.equal(await sessions.deleteSession(db, 'live'), false);
    });
  });
}
