import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { needTool } from '../helpers/env.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { cookieFrom, hiddenField, type SignedIn, signIn } from '../helpers/session.ts';
import { makeClient, makeUser, PASSWORD } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';
import { DEFAULT_TOTP, insertActiveTotp, oathtoolTotp } from '../helpers/totp.ts';

/**
 * "Confirm it's you" (src/flows/session-confirm.ts): a stolen password must not be enough to
 * enrol the thief's own authenticator (and so pass every later step-up), nor to run the admin
 * API as a staff user who has a second factor. TOTP codes come from oathtool.
 */
for (const dialect of testDialects()) {
  describe(`confirm it's you before changing factors (${dialect})`, () => {
    let tg: TestGateway;
    const unix = () => Math.floor(tg.clock.now().getTime() / 1000);
    const code = (secret: Buffer, stepsAhead = 0) => oathtoolTotp(secret, DEFAULT_TOTP, unix() + stepsAhead * 30);

    before(async () => {
      tg = await createTestGateway({ dialect });
    });
    after(async () => {
      await tg?.close();
    });

    /** A user with an authenticator app enrolled before the session we then open. */
    async function userWithTotp(name: string, roles?: string[]) {
      const u = await makeUser(tg.gw, name);
      if (roles !== undefined) await tg.gw.store.db.updateTable('users').set({ roles: JSON.stringify(roles) }).where('id', '=', u.id).execute();
      const totp = await insertActiveTotp(tg.gw, u.id);
      tg.clock.advance(1);
      return { id: u.id, secret: totp.secret, factorId: totp.id };
    }
    const as = (s: SignedIn) => ({ cookie: s.cookie, csrf: s.csrf });
    const post = (s: { cookie: string; csrf: string }, path: string, body: Record<string, unknown> = {}) => tg.http().post(path).set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send(body);
    const start = (s: { cookie: string; csrf: string }) => post(s, '/v1/me/session/confirmation');
    const verifyTotp = (stepupId: string, ticket: string, totpCode: string) => tg.http().post(`/v1/stepup/${stepupId}/verify`).set('Authorization', `Ticket ${ticket}`).send({ factor: 'totp', code: totpCode });
    const complete = (s: { cookie: string; csrf: string }, stepupId: string) => post(s, `/v1/me/session/confirmation/${stepupId}/complete`);

    it('with a password-only session a thief can neither enrol an authenticator or phone, nor remove one', async () => {
      const u = await userWithTotp('alice');
      const s = await signIn(tg, 'alice', PASSWORD);
      for (const [path, body] of [['/v1/me/factors/totp', {}], ['/v1/me/factors/sms_otp', { phone: '+8613800138000' }], ['/v1/me/factors/webauthn/registration', { label: 'mine' }], ['/v1/me/factors/recovery_code', {}]] as const) {
        const res = await post(s, path, body);
        assert.equal(res.status, 403, `${path}: ${res.text}`);
        assert.equal(res.body.code, 'second_factor_required');
        assert.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8');
      }
      const removal = await tg.http().delete(`/v1/me/factors/${u.factorId}`).set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf);
      assert.equal(removal.status, 403);
      const rows = await tg.gw.store.db.selectFrom('factors').select(['type', 'status']).where('user_id', '=', u.id).execute();
      assert.deepEqual(rows.map((r) => `${r.type}:${r.status}`).sort(), ['password:active', 'totp:active'], 'nothing was written');
    });

    it('confirming with the authenticator app replaces the session by one that may change factors; the old id is dead', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const u = await userWithTotp('bob');
      const s = await signIn(tg, 'bob', PASSWORD);
      const started = await start(as(s));
      assert.equal(started.status, 201, started.text);
      assert.deepEqual(started.body.options, [['totp']]);
      assert.match(started.body.user_url, /\/stepup\/stp_[^?]+\?ticket=/);
      const early = await complete(as(s), started.body.stepup_id);
      assert.equal(early.status, 400, 'not completed yet');
      assert.equal(early.body.code, 'confirmation_invalid');
      const wrong = await verifyTotp(started.body.stepup_id, started.body.ticket, '000000');
      assert.equal(wrong.status, 401, wrong.text);
      const ok = await verifyTotp(started.body.stepup_id, started.body.ticket, code(u.secret));
      assert.equal(ok.status, 200, ok.text);
      const done = await complete(as(s), started.body.stepup_id);
      assert.equal(done.status, 200, done.text);
      assert.ok((done.body.amr as string[]).includes('otp') && (done.body.amr as string[]).includes('mfa'));
      const newSid = cookieFrom(done);
      assert.ok(newSid !== undefined && `stepgate_session=${newSid}` !== s.cookie, 'a new session id');
      const confirmed = { cookie: `stepgate_session=${newSid}`, csrf: done.body.csrf_token as string };
      assert.equal((await tg.http().get('/v1/me/factors').set('Cookie', s.cookie)).status, 401, 'the old session is gone');
      assert.equal((await complete(confirmed, started.body.stepup_id)).body.code, 'confirmation_invalid', 'used once');
      const enrol = await post(confirmed, '/v1/me/factors/recovery_code');
      assert.equal(enrol.status, 201, enrol.text);
      const events = await tg.gw.store.db.selectFrom('audit_log').select('type').where('subject', '=', u.id).where('type', 'like', 'session.confirm%').orderBy('seq').execute();
      assert.deepEqual(events.map((e) => e.type), ['session.confirmation_started', 'session.confirmation_refused', 'session.confirmed', 'session.confirmation_refused'], 'refusals are audited too');
    });

    it('bound to its session, its user and its gateway: another session, another user, a relying client get nothing', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const u = await userWithTotp('carol');
      await userWithTotp('dan');
      const s1 = await signIn(tg, 'carol', PASSWORD);
      const s2 = await signIn(tg, 'carol', PASSWORD);
      const dan = await signIn(tg, 'dan', PASSWORD);
      const started = await start(as(s1));
      assert.equal((await verifyTotp(started.body.stepup_id, started.body.ticket, code(u.secret))).status, 200);
      assert.equal((await complete(as(s2), started.body.stepup_id)).body.code, 'confirmation_invalid', "another of carol's sessions");
      assert.equal((await complete(as(dan), started.body.stepup_id)).body.code, 'confirmation_invalid', 'another user');
      const client = await makeClient(tg.gw, 'shop', ['payment_code.issue']);
      const token = await tg.http().post(`/v1/stepup/${started.body.stepup_id}/token`).auth(client.clientId, client.secret);
      assert.ok(token.status >= 400 && token.status < 500, token.text);
      assert.ok(!('step_up_token' in token.body), 'no relying client can fetch a token for it');
      assert.equal((await complete(as(s1), 'stp_not-a-real-one-at-all')).body.code, 'confirmation_invalid');
      assert.equal((await complete(as(s1), started.body.stepup_id)).status, 200, 'its own session still can');
    });

    it('an expired confirmation cannot be finished, and the code it used cannot be replayed into a new one', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const u = await userWithTotp('erin');
      const s = await signIn(tg, 'erin', PASSWORD);
      const first = await start(as(s));
      const totpCode = code(u.secret);
      assert.equal((await verifyTotp(first.body.stepup_id, first.body.ticket, totpCode)).status, 200);
      const second = await start(as(s));
      assert.equal((await verifyTotp(second.body.stepup_id, second.body.ticket, totpCode)).status, 401, 'a TOTP code counts once');
      tg.clock.advance(tg.gw.config.stepup.transactionSeconds + 1);
      assert.equal((await complete(as(s), first.body.stepup_id)).body.code, 'confirmation_invalid', 'expired');
    });

    it('two concurrent completions: exactly one new session', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const u = await userWithTotp('fay');
      const s = await signIn(tg, 'fay', PASSWORD);
      const started = await start(as(s));
      assert.equal((await verifyTotp(started.body.stepup_id, started.body.ticket, code(u.secret))).status, 200);
      const results = await Promise.all(Array.from({ length: 10 }, () => complete(as(s), started.body.stepup_id)));
      assert.equal(results.filter((r) => r.status === 200).length, 1, results.map((r) => r.status).join(','));
      for (const r of results) assert.ok(r.status === 200 || (r.status >= 400 && r.status < 500), r.text);
      const sessions = await tg.gw.store.db.selectFrom('sessions').select('id_hash').where('user_id', '=', u.id).execute();
      assert.equal(sessions.length, 1);
    });

    it('nothing to confirm for a user with only a password, and factors enrolled in this very session do not need it', async () => {
      await makeUser(tg.gw, 'gus');
      tg.clock.advance(1);
      const s = await signIn(tg, 'gus', PASSWORD);
      const none = await start(as(s));
      assert.equal(none.status, 400);
      assert.equal(none.body.code, 'validation_failed');
      assert.equal((await post(as(s), '/v1/me/factors/recovery_code')).status, 201, 'a first factor needs nothing');
      assert.equal((await post(as(s), '/v1/me/factors/recovery_code')).status, 201, 'nor does replacing what this session enrolled');
      tg.clock.advance(1);
      const later = await signIn(tg, 'gus', PASSWORD);
      assert.equal((await post(as(later), '/v1/me/factors/recovery_code')).body.code, 'second_factor_required', 'a later session must confirm');
    });

    it('nor can a password-only session change the password of a user with a second factor (the owner would be locked out)', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const u = await userWithTotp('jon');
      const s = await signIn(tg, 'jon', PASSWORD);
      const body = { current_password: PASSWORD, new_password: 'a brand new passphrase 77' };
      const refused = await post(as(s), '/v1/me/password', body);
      assert.equal(refused.status, 403, refused.text);
      assert.equal(refused.body.code, 'second_factor_required');
      await signIn(tg, 'jon', PASSWORD);
      const started = await start(as(s));
      assert.equal((await verifyTotp(started.body.stepup_id, started.body.ticket, code(u.secret))).status, 200);
      const done = await complete(as(s), started.body.stepup_id);
      const changed = await post({ cookie: `stepgate_session=${cookieFrom(done)}`, csrf: done.body.csrf_token as string }, '/v1/me/password', body);
      assert.equal(changed.status, 200, changed.text);
      await signIn(tg, 'jon', 'a brand new passphrase 77');
    });

    it('a staff user with a second factor cannot run the admin API on a password alone', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const u = await userWithTotp('hana', ['admin']);
      const s = await signIn(tg, 'hana', PASSWORD);
      const refused = await tg.http().get('/v1/admin/users').set('Cookie', s.cookie);
      assert.equal(refused.status, 403, refused.text);
      assert.equal(refused.body.code, 'second_factor_required');
      const started = await start(as(s));
      assert.equal((await verifyTotp(started.body.stepup_id, started.body.ticket, code(u.secret))).status, 200);
      const done = await complete(as(s), started.body.stepup_id);
      const allowed = await tg.http().get('/v1/admin/users').set('Cookie', `stepgate_session=${cookieFrom(done)}`);
      assert.equal(allowed.status, 200, allowed.text);
    });

    it('through the pages: the security page asks, the step-up page takes the code, back with a new session', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const u = await userWithTotp('ivy');
      const agent = tg.agent();
      const loginPage = await agent.get('/login');
      const signed = await agent.post('/login').type('form').send({ _login_csrf: hiddenField(loginPage.text, '_login_csrf'), username: 'ivy', password: PASSWORD });
      assert.equal(signed.status, 303);
      const page = await agent.get('/security').set('Accept-Language', 'en');
      assert.match(page.text, /href="\/security\/confirm"/);
      const enrol = await agent.post('/security/totp').type('form').send({ _csrf: hiddenField(page.text, '_csrf') });
      assert.equal(enrol.status, 303);
      assert.equal(enrol.headers.location, '/security/confirm');
      const ask = await agent.get('/security/confirm').set('Accept-Language', 'zh-CN');
      assert.match(ask.text, /确认是您本人/);
      const go = await agent.post('/security/confirm').type('form').send({ _csrf: hiddenField(ask.text, '_csrf') });
      assert.equal(go.status, 303);
      const userUrl = new URL(go.headers.location as string);
      assert.match(userUrl.pathname, /^\/stepup\/stp_/);
      const landing = await agent.get(`${userUrl.pathname}${userUrl.search}`);
      assert.equal(landing.status, 303, 'the ticket moves into a cookie');
      const stepupPage = await agent.get(userUrl.pathname).set('Accept-Language', 'en');
      assert.match(stepupPage.text, /Confirm it's you to change your sign-in factors|Confirm it&#39;s you to change your sign-in factors/);
      const verified = await agent.post(`${userUrl.pathname}/verify`).type('form').send({ _stepup_csrf: hiddenField(stepupPage.text, '_stepup_csrf'), _csrf: hiddenField(stepupPage.text, '_csrf'), factor: 'totp', code: code(u.secret) });
      assert.equal(verified.status, 303, verified.text);
      const back = new URL(verified.headers.location as string);
      assert.equal(back.pathname, '/security/confirmed');
      const finished = await agent.get(`${back.pathname}${back.search}`);
      assert.equal(finished.status, 303);
      assert.equal(finished.headers.location, '/security?notice=confirmed');
      assert.ok(cookieFrom(finished), 'a new session cookie');
      const now = await agent.get('/security').set('Accept-Language', 'en');
      assert.doesNotMatch(now.text, /href="\/security\/confirm"/);
      const enrolled = await agent.post('/security/totp').type('form').send({ _csrf: hiddenField(now.text, '_csrf') });
      assert.equal(enrolled.status, 200, 'the enrolment page, at last');
      const replayed = await agent.get(`${back.pathname}${back.search}`);
      assert.equal(replayed.headers.location, '/security?notice=confirmFailed', 'the return link works once');
    });
  });
}
