import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type request from 'supertest';
import { verifyAuditChain } from '../../src/audit/audit-log.ts';
import { createUser, type Role } from '../../src/flows/users.ts';
import { cliEnv, runCli } from '../helpers/cli.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { hiddenField } from '../helpers/session.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * Helpdesk operations: a one-time password-reset link (the operator never sees or sets the
 * password) and removing / resetting a user's factors, each role-checked (admin, helpdesk;
 * helpdesk not on administrators) and audited with who and why; the CLI equivalents.
 */

const PASSWORD = 'a long enough passphrase 7';
const NEW_PASSWORD = 'a brand new passphrase 8';

interface Session {
  agent: request.Agent;
  csrf: string;
  userId: string;
}

function tokenOf(url: string): string {
  return new URL(url).searchParams.get('token') as string;
}

for (const dialect of testDialects()) {
  describe(`helpdesk: password reset and factor reset (${dialect})`, () => {
    let t: TestGateway;
    const ids: Record<string, string> = {};
    const as: Record<string, Session> = {};

    async function signIn(username: string, password = PASSWORD): Promise<Session> {
      const agent = t.agent();
      const res = await agent.post('/v1/login').send({ username, password });
      assert.equal(res.status, 200, `${username}: ${JSON.stringify(res.body)}`);
      return { agent, csrf: res.body.csrf_token as string, userId: res.body.user.id as string };
    }

    function post(s: Session, path: string, body?: object) {
      const r = s.agent.post(path).set('X-CSRF-Token', s.csrf);
      return body === undefined ? r : r.send(body);
    }

    async function seedFactor(userId: string, type: string, label: string): Promise<string> {
      const now = t.clock.now().getTime();
      const id = `fac_${type}_${label}_${userId.slice(-6)}`;
      await t.gw.store.db
        .insertInto('factors')
        .values({ id, user_id: userId, type, label, status: 'active', secret_hash: null, secret_sealed: t.gw.sealer.seal('seed', `factors.secret_sealed:${id}`), params: '{}', counter: 0, failures: 0, locked_until: null, created_at: now, updated_at: now, last_used_at: null })
        .execute();
      return id;
    }

    const events = (type: string, subject?: string) => {
      let q = t.gw.store.db.selectFrom('audit_log').selectAll().where('type', '=', type);
      if (subject !== undefined) q = q.where('subject', '=', subject);
      return q.orderBy('seq').execute();
    };

    before(async () => {
      t = await createTestGateway({ dialect, config: { login: { maxFailures: 3, delayAfterFailures: 100 } } });
      const people: [string, Role[]][] = [
        ['root', ['admin']],
        ['other-admin', ['admin']],
        ['helen', ['helpdesk']],
        ['audrey', ['auditor']],
        ['bob', []],
        ['carol', []],
        ['dave', []],
        ['erin', []],
        ['frank', []],
        ['gina', []],
        ['hank', ['helpdesk']],
      ];
      for (const [username, roles] of people) ids[username] = (await createUser(t.gw, { username, password: PASSWORD, roles }, { actor: 'test' })).id;
      for (const name of ['root', 'helen', 'audrey']) as[name] = await signIn(name);
    });
    after(async () => {
      await t.close();
    });

    describe('password reset', () => {
      it('helpdesk issues a link; the user sets a new password with it once; sessions end and the lock is lifted', async () => {
        const bobSession = await signIn('bob');
        // Bob forgot his password and locked himself out.
        for (let i = 0; i < 3; i += 1) assert.equal((await t.http().post('/v1/login').send({ username: 'bob', password: `guess number ${i}` })).status, 401);
        assert.equal((await t.http().post('/v1/login').send({ username: 'bob', password: PASSWORD })).status, 429);

        const issued = await post(as.helen!, `/v1/admin/users/${ids.bob}/password-reset`, { reason: 'caller verified by call-back, ticket 4711' });
        assert.equal(issued.status, 201, issued.text);
        assert.equal(issued.headers['cache-control'], 'no-store');
        assert.match(issued.body.reset_url, /^http:\/\/localhost:8080\/reset-password\?token=[A-Za-z0-9_-]{43}$/);
        assert.equal(issued.body.expires_at, new Date(t.clock.now().getTime() + 3600 * 1000).toISOString());
        const token = tokenOf(issued.body.reset_url);

        const [issuedEvent] = await events('password_reset.issued', ids.bob);
        assert.equal(issuedEvent?.actor, ids.helen);
        assert.equal(JSON.parse(issuedEvent?.data ?? '{}').reason, 'caller verified by call-back, ticket 4711');

        // A refused password leaves the link usable.
        const weak = await t.http().post('/v1/password-reset').send({ token, password: 'password123' });
        assert.equal(weak.status, 400);
        assert.equal(weak.body.code, 'password_policy');
        assert.deepEqual(weak.body.invalid_params.map((p: { pointer: string }) => p.pointer), ['/password']);
        const sameAsName = await t.http().post('/v1/password-reset').send({ token, password: 'bob' });
        assert.equal(sameAsName.body.code, 'password_policy');

        const done = await t.http().post('/v1/password-reset').send({ token, password: NEW_PASSWORD });
        assert.equal(done.status, 200, done.text);
        assert.equal(done.body.user.username, 'bob');
        assert.equal(done.headers['cache-control'], 'no-store');

        assert.equal((await bobSession.agent.get('/v1/me')).status, 401, "bob's old session ended");
        assert.equal((await t.http().post('/v1/login').send({ username: 'bob', password: PASSWORD })).status, 401, 'the old password is gone');
        assert.equal((await t.http().post('/v1/login').send({ username: 'bob', password: NEW_PASSWORD })).status, 200, 'the lock was lifted, the new password works');

        const again = await t.http().post('/v1/password-reset').send({ token, password: 'yet another passphrase 9' });
        assert.equal(again.status, 400);
        assert.equal(again.body.code, 'reset_token_invalid');

        const [completed] = await events('password_reset.completed', ids.bob);
        assert.equal(completed?.actor, ids.bob);
        assert.equal(JSON.parse(completed?.data ?? '{}').login_unlocked, true);
        assert.ok((await events('user.password_set', ids.bob)).length >= 1);
        // The token and the passwords appear nowhere: not in the audit log, not in the logs.
        const audit = JSON.stringify(await t.gw.store.db.selectFrom('audit_log').selectAll().execute());
        for (const secret of [token, NEW_PASSWORD]) {
          assert.ok(!audit.includes(secret), 'not in the audit log');
          assert.ok(!t.logs.text.includes(secret), 'not logged');
        }
        const stored = await t.gw.store.db.selectFrom('one_time_tokens').selectAll().where('purpose', '=', 'password_reset').execute();
        assert.ok(stored.every((r) => r.id_hash !== token), 'stored as a hash only');
        assert.equal((await verifyAuditChain(t.gw.store.db)).ok, true);
      });

      it('only the newest link works, and a link expires', async () => {
        const first = tokenOf((await post(as.helen!, `/v1/admin/users/${ids.carol}/password-reset`, { reason: 'first attempt' })).body.reset_url);
        const second = tokenOf((await post(as.helen!, `/v1/admin/users/${ids.carol}/password-reset`, { reason: 'second attempt' })).body.reset_url);
        const superseded = await t.http().post('/v1/password-reset').send({ token: first, password: NEW_PASSWORD });
        assert.equal(superseded.body.code, 'reset_token_invalid');
        assert.equal(JSON.parse((await events('password_reset.issued', ids.carol)).at(-1)?.data ?? '{}').previousLinksRevoked, 1);
        t.clock.advance(3600);
        const expired = await t.http().post('/v1/password-reset').send({ token: second, password: NEW_PASSWORD });
        assert.equal(expired.status, 400);
        assert.equal(expired.body.code, 'reset_token_invalid');
        for (const token of ['', 'x'.repeat(43), 'x'.repeat(500)]) {
          const res = await t.http().post('/v1/password-reset').send({ token, password: NEW_PASSWORD });
          assert.equal(res.status, 400, token);
        }
        assert.equal((await t.http().post('/v1/login').send({ username: 'carol', password: PASSWORD })).status, 200, 'nothing changed');
        // The hour also ended the operators' idle sessions.
        for (const name of ['root', 'helen', 'audrey']) as[name] = await signIn(name);
      });

      it('of 10 concurrent submissions of one link exactly one sets a password', async () => {
        const token = tokenOf((await post(as.root!, `/v1/admin/users/${ids.dave}/password-reset`, { reason: 'race test' })).body.reset_url);
        const results = await Promise.all(Array.from({ length: 10 }, (_, i) => t.http().post('/v1/password-reset').send({ token, password: `concurrent passphrase ${i}` })));
        const winners = results.filter((r) => r.status === 200);
        assert.equal(winners.length, 1, results.map((r) => r.status).join(','));
        assert.ok(results.filter((r) => r.status !== 200).every((r) => r.body.code === 'reset_token_invalid'));
        assert.equal((await events('password_reset.completed', ids.dave)).length, 1);
        const index = results.findIndex((r) => r.status === 200);
        assert.equal((await t.http().post('/v1/login').send({ username: 'dave', password: `concurrent passphrase ${index}` })).status, 200);
      });

      it('the page behind the link: form with the user name, CSRF bound to the link, done', async () => {
        const url = (await post(as.helen!, `/v1/admin/users/${ids.erin}/password-reset`, { reason: 'page test' })).body.reset_url as string;
        const token = tokenOf(url);
        const page = await t.http().get(`/reset-password?token=${encodeURIComponent(token)}`).set('Accept-Language', 'zh-CN');
        assert.equal(page.status, 200);
        assert.match(page.text, /设置新密码/);
        assert.match(page.text, /erin/);
        assert.equal(page.headers['referrer-policy'], 'no-referrer');
        assert.equal(page.headers['cache-control'], 'no-store');
        const csrf = hiddenField(page.text, 'csrf');

        const stale = await t.http().post('/reset-password').type('form').send({ token, csrf: 'forged', password: NEW_PASSWORD, password_confirm: NEW_PASSWORD });
        assert.equal(stale.status, 403);
        const mismatch = await t.http().post('/reset-password').type('form').send({ token, csrf, password: NEW_PASSWORD, password_confirm: `${NEW_PASSWORD}x` });
        assert.equal(mismatch.status, 400);
        assert.match(mismatch.text, /The two passwords differ/);
        const weak = await t.http().post('/reset-password').type('form').send({ token, csrf, password: 'short', password_confirm: 'short' });
        assert.equal(weak.status, 400);
        const done = await t.http().post('/reset-password').type('form').send({ token, csrf, username: 'erin', password: NEW_PASSWORD, password_confirm: NEW_PASSWORD });
        assert.equal(done.status, 200, done.text);
        assert.match(done.text, /Your password has been changed/);
        assert.equal((await t.http().post('/v1/login').send({ username: 'erin', password: NEW_PASSWORD })).status, 200);
        const used = await t.http().get(`/reset-password?token=${encodeURIComponent(token)}`);
        assert.equal(used.status, 400);
        assert.match(used.text, /invalid, has expired or has already been used/);
      });

      it('is role-checked: helpdesk not on administrators, auditors never; disabled accounts refused; a reason is required', async () => {
        const onAdmin = await post(as.helen!, `/v1/admin/users/${ids['other-admin']}/password-reset`, { reason: 'helpdesk on an admin' });
        assert.equal(onAdmin.status, 403);
        assert.equal(onAdmin.body.code, 'forbidden');
        assert.equal((await post(as.root!, `/v1/admin/users/${ids['other-admin']}/password-reset`, { reason: 'admin on an admin' })).status, 201);
        assert.equal((await post(as.audrey!, `/v1/admin/users/${ids.bob}/password-reset`, { reason: 'auditor tries' })).status, 403);
        assert.equal((await t.http().post(`/v1/admin/users/${ids.bob}/password-reset`).send({ reason: 'anonymous' })).status, 401);
        const noReason = await post(as.helen!, `/v1/admin/users/${ids.bob}/password-reset`, {});
        assert.equal(noReason.status, 400);
        assert.deepEqual(noReason.body.invalid_params.map((p: { pointer: string }) => p.pointer), ['/reason']);
        assert.equal((await post(as.helen!, '/v1/admin/users/usr_nope/password-reset', { reason: 'no such user' })).status, 404);
        await post(as.helen!, `/v1/admin/users/${ids.carol}/disable`, { reason: 'left the company' });
        const disabled = await post(as.helen!, `/v1/admin/users/${ids.carol}/password-reset`, { reason: 'should not work' });
        assert.equal(disabled.status, 409);
        await post(as.helen!, `/v1/admin/users/${ids.carol}/enable`, { reason: 'back again' });
      });
    });

    describe('staff accounts', () => {
      it('helpdesk cannot act on a staff account (an auditor, another helpdesk operator): no link, no reset, nothing written; an administrator can', async () => {
        const auditorFactor = await seedFactor(ids.audrey!, 'totp', 'staff');
        const before = await t.gw.store.db.selectFrom('audit_log').select('seq').execute();
        const links = async () => (await t.gw.store.db.selectFrom('one_time_tokens').select('id_hash').execute()).length;
        const linksBefore = await links();
        for (const target of [ids.audrey!, ids.hank!]) {
          for (const [path, body] of [
            ['password-reset', { reason: 'take over the auditor' }],
            ['factors/reset', { reason: 'take over the auditor' }],
            [`factors/${auditorFactor}/remove`, { reason: 'take over the auditor' }],
            ['disable', { reason: 'lock the auditor out' }],
            ['enable', { reason: 'reopen a staff account' }],
            ['unlock', { reason: 'help a guesser' }],
            ['sessions/end', { reason: 'throw the auditor out' }],
          ] as const) {
            const res = await post(as.helen!, `/v1/admin/users/${target}/${path}`, body);
            assert.equal(res.status, 403, `helpdesk ${path} on ${target}: ${res.text}`);
            assert.equal(res.body.code, 'forbidden');
          }
        }
        assert.equal((await t.gw.store.db.selectFrom('audit_log').select('seq').execute()).length, before.length, 'nothing audited');
        assert.equal(await links(), linksBefore, 'no reset link issued');
        assert.equal((await t.gw.store.db.selectFrom('factors').select('id').where('id', '=', auditorFactor).execute()).length, 1, 'the factor stays');
        assert.equal((await post(as.root!, `/v1/admin/users/${ids.audrey}/password-reset`, { reason: 'admin on an auditor' })).status, 201);
      });
    });

    describe('factor reset', () => {
      it('removes one factor with who and why; the password is reset, not removed', async () => {
        const totp = await seedFactor(ids.carol!, 'totp', 'phone');
        const res = await post(as.helen!, `/v1/admin/users/${ids.carol}/factors/${totp}/remove`, { reason: 'phone stolen, ticket 99' });
        assert.equal(res.status, 200, res.text);
        assert.ok(!res.body.user.factors.some((f: { id: string }) => f.id === totp));
        const [removed] = await events('factor.removed', ids.carol);
        assert.equal(removed?.actor, ids.helen);
        assert.deepEqual(JSON.parse(removed?.data ?? '{}'), { factorId: totp, factorType: 'totp', reason: 'phone stolen, ticket 99' });

        const password = await t.gw.store.db.selectFrom('factors').select('id').where('user_id', '=', ids.carol!).where('type', '=', 'password').executeTakeFirstOrThrow();
        const refused = await post(as.helen!, `/v1/admin/users/${ids.carol}/factors/${password.id}/remove`, { reason: 'try the password' });
        assert.equal(refused.status, 409);
        assert.equal((await post(as.helen!, `/v1/admin/users/${ids.carol}/factors/${totp}/remove`, { reason: 'again' })).status, 404, 'gone already');
        const bobs = await seedFactor(ids.bob!, 'totp', 'bobs');
        assert.equal((await post(as.helen!, `/v1/admin/users/${ids.carol}/factors/${bobs}/remove`, { reason: 'wrong user' })).status, 404, "another user's factor");
        assert.equal((await post(as.helen!, `/v1/admin/users/${ids.carol}/factors/x/remove`, {})).status, 400);
      });

      it('resets all factors but the password (or only some types), ends the sessions, one summary event', async () => {
        const userId = ids.frank!;
        const [totp, sms, hw] = [await seedFactor(userId, 'totp', 'a'), await seedFactor(userId, 'sms_otp', 'b'), await seedFactor(userId, 'hardware_otp', 'c')];
        const onlyTotp = await post(as.helen!, `/v1/admin/users/${userId}/factors/reset`, { reason: 'new phone', types: ['totp'] });
        assert.equal(onlyTotp.status, 200, onlyTotp.text);
        assert.deepEqual(onlyTotp.body.removed, [{ id: totp, type: 'totp' }]);

        const frankSession = await signIn('frank');
        const all = await post(as.helen!, `/v1/admin/users/${userId}/factors/reset`, { reason: 'account recovery, identity checked in branch' });
        assert.equal(all.status, 200, all.text);
        assert.deepEqual(all.body.removed.map((r: { id: string }) => r.id).sort(), [sms, hw].sort());
        assert.deepEqual(all.body.user.factors.map((f: { type: string }) => f.type), ['password'], 'the password stays');
        assert.equal((await frankSession.agent.get('/v1/me')).status, 401, 'sessions ended');
        assert.equal(all.body.sessions_ended, 1);
        const summary = (await events('user.factors_reset', userId)).at(-1);
        assert.equal(summary?.actor, ids.helen);
        const data = JSON.parse(summary?.data ?? '{}');
        assert.equal(data.reason, 'account recovery, identity checked in branch');
        assert.equal(data.removed.length, 2);
        assert.equal((await events('factor.removed', userId)).length, 3);
        // Nothing left: an empty reset is fine and still audited.
        const empty = await post(as.helen!, `/v1/admin/users/${userId}/factors/reset`, { reason: 'double check' });
        assert.deepEqual(empty.body.removed, []);
      });

      it('a reset that fails part-way changes nothing: no factor removed, no session ended, nothing audited', async () => {
        const userId = ids.gina!;
        const seeded = [await seedFactor(userId, 'totp', 'x'), await seedFactor(userId, 'sms_otp', 'y')];
        const ginaSession = await signIn('gina');
        const auditBefore = (await t.gw.store.db.selectFrom('audit_log').select('seq').execute()).length;
        const append = t.gw.audit.append;
        t.gw.audit.append = async (executor, event) => {
          if (event.type === 'user.factors_reset') throw new Error('audit store refused');
          return append.call(t.gw.audit, executor, event);
        };
        try {
          const res = await post(as.helen!, `/v1/admin/users/${userId}/factors/reset`, { reason: 'lost phone, identity checked' });
          assert.equal(res.status, 500);
        } finally {
          t.gw.audit.append = append;
        }
        const left = await t.gw.store.db.selectFrom('factors').select('id').where('user_id', '=', userId).where('type', '!=', 'password').execute();
        assert.deepEqual(left.map((r) => r.id).sort(), [...seeded].sort(), 'every factor is still there');
        assert.equal((await ginaSession.agent.get('/v1/me')).status, 200, 'the session is still open');
        assert.equal((await t.gw.store.db.selectFrom('audit_log').select('seq').execute()).length, auditBefore, 'no factor.removed without its reset');
      });

      it('is role-checked and validated', async () => {
        await seedFactor(ids['other-admin']!, 'totp', 'adm');
        assert.equal((await post(as.helen!, `/v1/admin/users/${ids['other-admin']}/factors/reset`, { reason: 'helpdesk on admin' })).status, 403);
        assert.equal((await post(as.audrey!, `/v1/admin/users/${ids.bob}/factors/reset`, { reason: 'auditor' })).status, 403);
        for (const [body, pointer] of [[{}, '/reason'], [{ reason: 'ok ok', types: [] }, '/types'], [{ reason: 'ok ok', types: ['NOT A TYPE'] }, '/types/0'], [{ reason: 'ok ok', extra: 1 }, '/extra']] as const) {
          const res = await post(as.root!, `/v1/admin/users/${ids.bob}/factors/reset`, body);
          assert.equal(res.status, 400, JSON.stringify(body));
          assert.ok(res.body.invalid_params.some((p: { pointer: string }) => p.pointer === pointer), `${JSON.stringify(body)}: ${JSON.stringify(res.body)}`);
        }
        const admin = await post(as.root!, `/v1/admin/users/${ids['other-admin']}/factors/reset`, { reason: 'admin may' });
        assert.equal(admin.status, 200);
      });
    });

    describe('CLI', () => {
      it('users reset-password prints a working link; users reset-factors removes; both audited with the OS account', async () => {
        const env = cliEnv(t);
        const run = await runCli(['users', 'reset-password', '--username', 'bob', '--reason', 'walk-in, id card checked', '--json'], env);
        assert.equal(run.status, 0, run.stderr);
        const link = JSON.parse(run.stdout) as { reset_url: string; expires_at: string };
        const done = await t.http().post('/v1/password-reset').send({ token: tokenOf(link.reset_url), password: 'cli issued passphrase 1' });
        assert.equal(done.status, 200, done.text);
        assert.match((await events('password_reset.issued', ids.bob)).at(-1)?.actor ?? '', /^cli/);

        const factor = await seedFactor(ids.bob!, 'sms_otp', 'cli');
        const reset = await runCli(['users', 'reset-factors', '--username', 'bob', '--reason', 'lost phone', '--types', 'sms_otp'], env);
        assert.equal(reset.status, 0, reset.stderr);
        assert.match(reset.stdout, new RegExp(`removed 1 factor\\(s\\): sms_otp ${factor}`));
        assert.match((await events('user.factors_reset', ids.bob)).at(-1)?.actor ?? '', /^cli/);

        const [unknown, noReason] = await Promise.all([
          runCli(['users', 'reset-password', '--username', 'nobody-here', '--reason', 'no such user'], env),
          runCli(['users', 'reset-factors', '--username', 'bob'], env),
        ]);
        assert.equal(unknown.status, 1);
        assert.match(unknown.stderr, /not_found/);
        assert.equal(noReason.status, 2);
        assert.match(noReason.stderr, /--reason is required/);
      });
    });
  });
}
