import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isAppError } from '../../src/errors/app-error.ts';
import {
  createUser,
  findUserByUsername,
  getUser,
  listUsers,
  setPassword,
  setUserStatus,
  unlockLogin,
} from '../../src/flows/users.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { testDialects } from '../helpers/stores.ts';

/** The user flows the login depends on and other slices call (admin API, CLI, set-up). */

const PASSWORD = 'orchid-lantern-93';
const CLI = { actor: 'cli' };

async function rejectsWith(p: Promise<unknown>, code: string, pointer?: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isAppError(err), String(err));
    assert.equal(err.code, code);
    if (pointer !== undefined) assert.ok(err.invalidParams?.some((x) => x.pointer === pointer), JSON.stringify(err.invalidParams));
    return true;
  });
}

for (const dialect of testDialects()) {
  describe(`users (${dialect})`, () => {
    let tg: TestGateway;

    before(async () => {
      tg = await createTestGateway({ dialect, config: { login: { maxFailures: 3, delayBaseSeconds: 0 } } });
    });
    after(async () => {
      await tg.close();
    });

    const count = async (table: 'users' | 'factors' | 'audit_log') => (await tg.gw.store.db.selectFrom(table).select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n;

    it('creates a user with an argon2id password factor and a user.created event, atomically', async () => {
      const u = await createUser(tg.gw, { username: 'Yusuf@Example.com', displayName: '  Yusuf  ', password: PASSWORD, roles: ['admin', 'admin'], groups: ['treasury'] }, { actor: 'setup', ip: '192.0.2.1', requestId: 'req-12345678' });
      assert.equal(u.username, 'yusuf@example.com');
      assert.equal(u.displayName, 'Yusuf');
      assert.deepEqual(u.roles, ['admin']);
      assert.deepEqual(u.groups, ['treasury']);
      assert.equal(u.status, 'active');
      assert.equal(u.createdAt.getTime(), tg.clock.now().getTime());
      const factor = await tg.gw.store.db.selectFrom('factors').selectAll().where('user_id', '=', u.id).executeTakeFirstOrThrow();
      assert.equal(factor.type, 'password');
      assert.equal(factor.status, 'active');
      assert.match(factor.secret_hash ?? '', /^\$argon2id\$/);
      const event = await tg.gw.store.db.selectFrom('audit_log').selectAll().where('type', '=', 'user.created').where('subject', '=', u.id).executeTakeFirstOrThrow();
      assert.equal(event.actor, 'setup');
      assert.equal(event.ip, '192.0.2.1');
      assert.doesNotMatch(event.data, /orchid/);
      assert.deepEqual((await getUser(tg.gw, u.id))?.roles, ['admin']);
      assert.equal((await findUserByUsername(tg.gw, 'YUSUF@example.com'))?.id, u.id);
      assert.equal(await getUser(tg.gw, 'usr_nope'), undefined);
    });

    it('rejects invalid input with the field pointer and writes nothing', async () => {
      const before = [await count('users'), await count('factors'), await count('audit_log')];
      await rejectsWith(createUser(tg.gw, { username: 'has space', password: PASSWORD }, CLI), 'validation_failed', '/username');
      await rejectsWith(createUser(tg.gw, { username: '', password: PASSWORD }, CLI), 'validation_failed', '/username');
      await rejectsWith(createUser(tg.gw, { username: 'x'.repeat(65), password: PASSWORD }, CLI), 'validation_failed', '/username');
      await rejectsWith(createUser(tg.gw, { username: 'zoe', password: PASSWORD, roles: ['root' as never] }, CLI), 'validation_failed', '/roles/0');
      await rejectsWith(createUser(tg.gw, { username: 'zoe', password: 'short' }, CLI), 'password_policy', '/password');
      await rejectsWith(createUser(tg.gw, { username: 'zoe', password: 'password123' }, CLI), 'password_policy', '/password');
      await rejectsWith(createUser(tg.gw, { username: 'zoe-the-great', password: 'ZOE-THE-GREAT' }, CLI), 'password_policy', '/password');
      await rejectsWith(createUser(tg.gw, { username: 'zoe', password: 'x'.repeat(129) }, CLI), 'password_policy', '/password');
      assert.deepEqual([await count('users'), await count('factors'), await count('audit_log')], before);
    });

    it('a duplicate username (after normalisation) is a conflict on /username', async () => {
      await createUser(tg.gw, { username: 'zara', password: PASSWORD }, CLI);
      await rejectsWith(createUser(tg.gw, { username: 'ＺＡＲＡ', password: PASSWORD }, CLI), 'conflict', '/username');
      const racing = await Promise.allSettled([
        createUser(tg.gw, { username: 'twin', password: PASSWORD }, CLI),
        createUser(tg.gw, { username: 'twin', password: PASSWORD }, CLI),
      ]);
      assert.equal(racing.filter((r) => r.status === 'fulfilled').length, 1);
      const loser = racing.find((r) => r.status === 'rejected');
      assert.ok(loser !== undefined && isAppError(loser.reason) && loser.reason.code === 'conflict');
    });

    it("joins the caller's transaction: a rollback takes the user with it", async () => {
      await assert.rejects(
        tg.gw.store.db.transaction().execute(async (tx) => {
          await createUser(tg.gw, { username: 'ghosted', password: PASSWORD }, CLI, tx);
          throw new Error('caller aborts');
        }),
        /caller aborts/,
      );
      assert.equal(await findUserByUsername(tg.gw, 'ghosted'), undefined);
      const kept = await tg.gw.store.db.transaction().execute((tx) => createUser(tg.gw, { username: 'kept', password: PASSWORD }, CLI, tx));
      assert.equal((await findUserByUsername(tg.gw, 'kept'))?.id, kept.id);
    });

    it('lists and searches users with paging', async () => {
      for (const name of ['list-a', 'list-b', 'list-c']) await createUser(tg.gw, { username: name, displayName: `Lister ${name}`, password: PASSWORD }, CLI);
      const found = await listUsers(tg.gw, { query: 'list-', limit: 10, offset: 0 });
      assert.deepEqual(found.map((u) => u.username), ['list-a', 'list-b', 'list-c']);
      assert.deepEqual((await listUsers(tg.gw, { query: 'LISTER LIST-B', limit: 10, offset: 0 })).map((u) => u.username), ['list-b']);
      assert.deepEqual((await listUsers(tg.gw, { query: 'list-', limit: 1, offset: 1 })).map((u) => u.username), ['list-b']);
      assert.deepEqual(await listUsers(tg.gw, { query: '%', limit: 10, offset: 0 }), [], 'wildcards match literally');
      assert.ok((await listUsers(tg.gw, { limit: 100, offset: 0 })).length >= 3);
    });

    it('setPassword enforces the policy and replaces the hash', async () => {
      const u = await createUser(tg.gw, { username: 'amos', password: PASSWORD }, CLI);
      await rejectsWith(setPassword(tg.gw, u.id, 'amos', CLI), 'password_policy', '/password');
      await rejectsWith(setPassword(tg.gw, 'usr_missing', 'another-long-password', CLI), 'not_found');
      await setPassword(tg.gw, u.id, 'brand-new-phrase-55', CLI);
      assert.equal((await tg.http().post('/v1/login').send({ username: 'amos', password: PASSWORD })).status, 401);
      assert.equal((await tg.http().post('/v1/login').send({ username: 'amos', password: 'brand-new-phrase-55' })).status, 200);
    });

    it('setUserStatus and unlockLogin: 404 for unknown users, audited otherwise', async () => {
      const u = await createUser(tg.gw, { username: 'bea', password: PASSWORD }, CLI);
      await rejectsWith(setUserStatus(tg.gw, 'usr_missing', 'disabled', CLI, 'x'), 'not_found');
      await rejectsWith(unlockLogin(tg.gw, 'usr_missing', CLI, 'x'), 'not_found');
      await setUserStatus(tg.gw, u.id, 'disabled', { actor: 'usr_admin' }, 'fraud review');
      assert.equal((await getUser(tg.gw, u.id))?.status, 'disabled');
      await setUserStatus(tg.gw, u.id, 'active', { actor: 'usr_admin' }, 'cleared');
      const events = await tg.gw.store.db.selectFrom('audit_log').selectAll().where('subject', '=', u.id).orderBy('seq').execute();
      assert.deepEqual(events.map((e) => e.type), ['user.created', 'user.disabled', 'user.enabled']);
      assert.equal(JSON.parse(events[1]?.data ?? '{}').reason, 'fraud review');
      assert.equal(events[1]?.actor, 'usr_admin');
    });
  });
}
