import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { unlockLogin } from '../../src/flows/users.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { confirmForTest, cookieFrom, signIn, type SignedIn } from '../helpers/session.ts';
import { SoftCredential } from '../helpers/soft-authenticator.ts';
import { makeUser, PASSWORD } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';
import { enrolSoft, ORIGIN, RP_ID, WEBAUTHN_TEST_CONFIG } from '../helpers/webauthn.ts';

/** Registering credentials from "my security", and passkey sign-in, over the JSON API. */

for (const dialect of testDialects()) {
  describe(`webauthn enrolment (${dialect})`, () => {
    let tg: TestGateway;
    let erin: SignedIn;
    let erinId: string;

    before(async () => {
      tg = await createTestGateway({ dialect, config: { ...WEBAUTHN_TEST_CONFIG, session: { freshSeconds: 300 } } });
      erinId = (await makeUser(tg.gw, 'erin')).id;
      await makeUser(tg.gw, 'frank');
      erin = await confirmForTest(tg, await signIn(tg, 'erin', PASSWORD));
    });
    after(async () => {
      await tg.close();
    });

    const begin = (s: SignedIn, body: Record<string, unknown> = { label: 'Work laptop fingerprint' }) =>
      tg.http().post('/v1/me/factors/webauthn/registration').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send(body);
    const finish = (s: SignedIn, body: Record<string, unknown>) => tg.http().post('/v1/me/factors/webauthn').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send(body);

    it('options: UV required, resident key preferred, EdDSA/ES256/RS256, our RP, the user handle is the user id', async () => {
      const res = await begin(erin);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.headers['cache-control'], 'no-store');
      const o = res.body.options;
      assert.deepEqual(o.rp, { name: 'Stepgate', id: RP_ID });
      assert.equal(o.authenticatorSelection.userVerification, 'required');
      assert.equal(o.authenticatorSelection.residentKey, 'preferred');
      assert.deepEqual(o.pubKeyCredParams.map((p: { alg: number }) => p.alg), [-8, -7, -257]);
      assert.equal(Buffer.from(o.user.id, 'base64url').toString(), erinId);
      assert.equal(o.user.name, 'erin');
      assert.ok(Buffer.from(o.challenge, 'base64url').length >= 16);
      assert.match(res.body.factor_id, /^fac_/);
    });

    it('register, then the credential is listed with its public details; a second one is excluded from new options', async () => {
      const cred = new SoftCredential();
      const id = await enrolSoft(tg, erin, cred, 'Laptop');
      const listed = await tg.http().get('/v1/me/factors').set('Cookie', erin.cookie);
      const f = listed.body.factors.find((x: { id: string }) => x.id === id);
      assert.equal(f.type, 'webauthn');
      assert.equal(f.label, 'Laptop');
      assert.equal(f.status, 'active');
      assert.equal(f.details.backupEligible, false);
      assert.ok(!JSON.stringify(f).includes('publicKey'), 'the key material stays internal');
      const next = await begin(erin, { label: 'Another' });
      assert.ok(next.body.options.excludeCredentials.some((c: { id: string }) => c.id === cred.credentialId));
      const audit = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'factor.enrolled').execute();
      assert.ok(audit.some((a) => JSON.parse(a.data).factorId === id));
    });

    it('a refused answer (UV=0, wrong origin, wrong RP ID, BS without BE) ends the enrolment: 400, audited, the challenge unusable', async () => {
      for (const [o, reason] of [[{ flags: { uv: false } }, 'user_not_verified'], [{ origin: 'https://evil.test' }, 'origin_mismatch'], [{ rpId: 'evil.test' }, 'rp_id_mismatch'], [{ flags: { bs: true } }, 'backup_state_invalid']] as const) {
        const cred = new SoftCredential();
        const begun = await begin(erin);
        const response = cred.register({ challenge: begun.body.options.challenge, origin: ORIGIN, rpId: RP_ID, ...o });
        const res = await finish(erin, { factor_id: begun.body.factor_id, credential: response });
        assert.equal(res.status, 400, res.text);
        assert.equal(res.body.code, 'registration_refused');
        assert.equal(res.body.invalid_params[0].pointer, '/credential');
        const good = cred.register({ challenge: begun.body.options.challenge, origin: ORIGIN, rpId: RP_ID });
        assert.equal((await finish(erin, { factor_id: begun.body.factor_id, credential: good })).status, 404, 'the challenge was single-use');
        const failed = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'factor.enrolment_failed').execute();
        assert.ok(failed.some((a) => JSON.parse(a.data).factorId === begun.body.factor_id && JSON.parse(a.data).reason === reason), reason);
      }
    });

    it('the same authenticator cannot be registered twice, by the same or another user', async () => {
      const cred = new SoftCredential();
      await enrolSoft(tg, erin, cred);
      const again = await begin(erin);
      const dup = await finish(erin, { factor_id: again.body.factor_id, credential: cred.register({ challenge: again.body.options.challenge, origin: ORIGIN, rpId: RP_ID }) });
      assert.equal(dup.status, 409);
      assert.equal(dup.body.code, 'conflict');
      const frank = await signIn(tg, 'frank', PASSWORD);
      const theirs = await begin(frank);
      const stolen = await finish(frank, { factor_id: theirs.body.factor_id, credential: cred.register({ challenge: theirs.body.options.challenge, origin: ORIGIN, rpId: RP_ID }) });
      assert.equal(stolen.status, 409);
      const owner = await tg.gw.store.db.selectFrom('webauthn_credentials').select('user_id').where('credential_id', '=', cred.credentialId).executeTakeFirstOrThrow();
      assert.equal(owner.user_id, erinId);
    });

    it('two concurrent finishes of one registration activate it once', async () => {
      const cred = new SoftCredential();
      const begun = await begin(erin);
      const response = cred.register({ challenge: begun.body.options.challenge, origin: ORIGIN, rpId: RP_ID });
      const results = await Promise.all(Array.from({ length: 6 }, () => finish(erin, { factor_id: begun.body.factor_id, credential: response })));
      assert.equal(results.filter((r) => r.status === 201).length, 1, results.map((r) => r.status).join(','));
      for (const r of results.filter((x) => x.status !== 201)) assert.ok([404, 409].includes(r.status), r.text);
      const rows = await tg.gw.store.db.selectFrom('webauthn_credentials').select('factor_id').where('credential_id', '=', cred.credentialId).execute();
      assert.equal(rows.length, 1);
    });

    it('another user\'s pending registration is 404; an old one has expired', async () => {
      const frank = await signIn(tg, 'frank', PASSWORD);
      const begun = await begin(erin);
      const cred = new SoftCredential();
      const response = cred.register({ challenge: begun.body.options.challenge, origin: ORIGIN, rpId: RP_ID });
      assert.equal((await finish(frank, { factor_id: begun.body.factor_id, credential: response })).status, 404);
      tg.clock.advance(151);
      const late = await finish(erin, { factor_id: begun.body.factor_id, credential: response });
      assert.equal(late.status, 404);
      erin = await confirmForTest(tg, await signIn(tg, 'erin', PASSWORD));
    });

    it('needs a session, its CSRF token and a fresh sign-in; bad bodies are 400 with a pointer', async () => {
      assert.equal((await tg.http().post('/v1/me/factors/webauthn/registration').send({ label: 'x' })).status, 401);
      const noCsrf = await tg.http().post('/v1/me/factors/webauthn/registration').set('Cookie', erin.cookie).send({ label: 'x' });
      assert.equal(noCsrf.status, 403);
      const badLabel = await begin(erin, { label: '   ' });
      assert.equal(badLabel.status, 400);
      assert.equal(badLabel.body.invalid_params[0].pointer, '/label');
      const unknown = await begin(erin, { label: 'x', extra: 1 });
      assert.equal(unknown.status, 400);
      const badId = await finish(erin, { factor_id: 'nope', credential: {} });
      assert.equal(badId.status, 400);
      assert.equal(badId.body.invalid_params[0].pointer, '/factor_id');
      tg.clock.advance(301);
      const stale = await begin(erin);
      assert.equal(stale.status, 401);
      assert.equal(stale.body.code, 'fresh_login_required');
      erin = await confirmForTest(tg, await signIn(tg, 'erin', PASSWORD));
    });

    it('rename and remove (the credential id is released with the factor)', async () => {
      const cred = new SoftCredential();
      const id = await enrolSoft(tg, erin, cred);
      const renamed = await tg.http().patch(`/v1/me/factors/${id}`).set('Cookie', erin.cookie).set('X-CSRF-Token', erin.csrf).send({ label: 'Old phone' });
      assert.equal(renamed.status, 200);
      assert.equal(renamed.body.label, 'Old phone');
      const removed = await tg.http().delete(`/v1/me/factors/${id}`).set('Cookie', erin.cookie).set('X-CSRF-Token', erin.csrf);
      assert.equal(removed.status, 204);
      assert.equal((await tg.gw.store.db.selectFrom('webauthn_credentials').select('factor_id').where('credential_id', '=', cred.credentialId).execute()).length, 0);
      // …so it can be registered again.
      await enrolSoft(tg, erin, cred);
    });

    it('the "my security" page has the WebAuthn section with the enrol script and strings in both languages', async () => {
      const en = await tg.http().get('/security').set('Cookie', erin.cookie).set('Accept-Language', 'en');
      assert.equal(en.status, 200);
      assert.match(en.text, /id="webauthn-enrol"/);
      assert.match(en.text, /\/static\/js\/webauthn-enrol\.js/);
      assert.match(en.text, /Add fingerprint or security key/);
      const zh = await tg.http().get('/security').set('Cookie', erin.cookie).set('Accept-Language', 'zh-CN');
      assert.match(zh.text, /添加指纹或安全密钥/);
      const js = await tg.http().get('/static/vendor/simplewebauthn/index.js');
      assert.equal(js.status, 200);
      assert.match(js.headers['content-type'] ?? '', /javascript/);
      assert.equal((await tg.http().get('/static/vendor/simplewebauthn/index.d.ts')).status, 404);
      assert.equal((await tg.http().get('/static/vendor/simplewebauthn/../package.json')).status, 404);
    });
  });

  describe(`passkey sign-in (${dialect})`, () => {
    let tg: TestGateway;
    let gina: { id: string };
    const key = new SoftCredential({ counter: 1 });

    before(async () => {
      tg = await createTestGateway({ dialect, config: WEBAUTHN_TEST_CONFIG });
      gina = await makeUser(tg.gw, 'gina');
      await enrolSoft(tg, await signIn(tg, 'gina', PASSWORD), key);
    });
    after(async () => {
      await tg.close();
    });

    const options = () => tg.http().post('/v1/login/webauthn/options').send();
    const login = (body: Record<string, unknown>) => tg.http().post('/v1/login/webauthn').send(body);
    const handle = () => Buffer.from(gina.id).toString('base64url');

    it('a discoverable-credential request, then a session with amr ["hwk","user"] that counts as a fresh sign-in', async () => {
      const o = await options();
      assert.equal(o.status, 200, o.text);
      assert.equal(o.body.options.allowCredentials, undefined);
      assert.equal(o.body.options.userVerification, 'required');
      const res = await login({ login_token: o.body.login_token, credential: key.assert({ challenge: o.body.options.challenge, origin: ORIGIN, rpId: RP_ID, userHandle: handle() }) });
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(res.body.amr, ['hwk', 'user']);
      const sid = cookieFrom(res);
      assert.ok(sid);
      const me = await tg.http().get('/v1/me').set('Cookie', `stepgate_session=${sid}`);
      assert.equal(me.body.user.username, 'gina');
      assert.deepEqual(me.body.session.amr, ['hwk', 'user']);
      const fresh = await tg.http().post('/v1/me/factors/webauthn/registration').set('Cookie', `stepgate_session=${sid}`).set('X-CSRF-Token', res.body.csrf_token).send({ label: 'x' });
      assert.equal(fresh.status, 200);
      const audit = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'login.succeeded').execute();
      assert.ok(audit.some((a) => JSON.parse(a.data).method === 'webauthn'));
    });

    it('a login token is single-use (also under concurrency) and tamper-proof', async () => {
      const o = await options();
      const credential = key.assert({ challenge: o.body.options.challenge, origin: ORIGIN, rpId: RP_ID });
      const results = await Promise.all(Array.from({ length: 8 }, () => login({ login_token: o.body.login_token, credential })));
      assert.equal(results.filter((r) => r.status === 200).length, 1, results.map((r) => r.status).join(','));
      for (const r of results.filter((x) => x.status !== 200)) assert.equal(r.body.code, 'challenge_required');
      const o2 = await options();
      const [c, issued, mac] = o2.body.login_token.split('.');
      const forged = await login({ login_token: `${c}.${Number(issued) + 100000}.${mac}`, credential: key.assert({ challenge: c, origin: ORIGIN, rpId: RP_ID }) });
      assert.equal(forged.body.code, 'challenge_required');
      tg.clock.advance(151);
      const expired = await login({ login_token: o2.body.login_token, credential: key.assert({ challenge: c, origin: ORIGIN, rpId: RP_ID }) });
      assert.equal(expired.body.code, 'challenge_required');
    });

    it('refused with one answer: unknown credential, wrong origin, UV=0, wrong user handle, wrong challenge, disabled user', async () => {
      const stranger = new SoftCredential();
      const cases: [(challenge: string) => unknown, string][] = [
        [(ch) => stranger.assert({ challenge: ch, origin: ORIGIN, rpId: RP_ID }), 'unknown_credential'],
        [(ch) => key.assert({ challenge: ch, origin: 'https://evil.test', rpId: RP_ID }), 'origin_mismatch'],
        [(ch) => key.assert({ challenge: ch, origin: ORIGIN, rpId: RP_ID, flags: { uv: false } }), 'user_not_verified'],
        [(ch) => key.assert({ challenge: ch, origin: ORIGIN, rpId: RP_ID, userHandle: Buffer.from('usr_other').toString('base64url') }), 'user_handle_mismatch'],
        [() => key.assert({ challenge: 'A'.repeat(43), origin: ORIGIN, rpId: RP_ID }), 'challenge_mismatch'],
      ];
      for (const [make, reason] of cases) {
        const o = await options();
        const res = await login({ login_token: o.body.login_token, credential: make(o.body.options.challenge) });
        assert.equal(res.status, 401, `${reason}: ${res.text}`);
        assert.equal(res.body.code, 'invalid_credentials');
        const failed = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'login.failed').execute();
        assert.ok(failed.some((a) => JSON.parse(a.data).reason === reason), reason);
      }
      await tg.gw.store.db.updateTable('users').set({ status: 'disabled' }).where('id', '=', gina.id).execute();
      const o = await options();
      const res = await login({ login_token: o.body.login_token, credential: key.assert({ challenge: o.body.options.challenge, origin: ORIGIN, rpId: RP_ID }) });
      assert.equal(res.status, 401);
      assert.equal(res.body.code, 'invalid_credentials');
      await tg.gw.store.db.updateTable('users').set({ status: 'active' }).where('id', '=', gina.id).execute();
    });

    it("anonymous failures with someone's credential id lock passkey sign-in only, never the factor their payments need", async () => {
      const hank = await makeUser(tg.gw, 'hank');
      const hankKey = new SoftCredential({ counter: 1 });
      const factorId = await enrolSoft(tg, await signIn(tg, 'hank', PASSWORD), hankKey);
      const attempt = async (badSignature: boolean) => {
        const o = await options();
        return login({ login_token: o.body.login_token, credential: hankKey.assert({ challenge: o.body.options.challenge, origin: ORIGIN, rpId: RP_ID, badSignature, userHandle: Buffer.from(hank.id).toString('base64url') }) });
      };
      for (let i = 0; i < tg.config.login.maxFailures; i += 1) assert.equal((await attempt(true)).status, 401);
      // Counted before the comparison: now even the right assertion is refused…
      const locked = await attempt(false);
      assert.equal(locked.status, 423, locked.text);
      assert.equal(locked.body.code, 'factor_locked');
      // …but the factor itself was not charged: step-ups (payments) still take it.
      const row = await tg.gw.store.db.selectFrom('factors').select(['failures', 'locked_until']).where('id', '=', factorId).executeTakeFirstOrThrow();
      assert.deepEqual({ failures: Number(row.failures), locked: row.locked_until !== null }, { failures: 0, locked: false });
      // The operator's unlock of the user's sign-in lifts it at once; so does time.
      await unlockLogin(tg.gw, hank.id, { actor: 'test' }, 'called the helpdesk');
      assert.equal((await attempt(false)).status, 200);
      for (let i = 0; i < tg.config.login.maxFailures; i += 1) assert.equal((await attempt(true)).status, 401);
      assert.equal((await attempt(false)).status, 423);
      tg.clock.advance(tg.config.login.lockSeconds + 1);
      assert.equal((await attempt(false)).status, 200);
      // A factor that step-ups locked is refused here as well, uncompared.
      await tg.gw.store.db.updateTable('factors').set({ failures: tg.config.factors.maxFailures, locked_until: tg.clock.now().getTime() + 60_000 }).where('id', '=', factorId).execute();
      assert.equal((await attempt(false)).status, 423);
    });

    it('the login page offers passkeys (autofill + button) in both languages', async () => {
      const en = await tg.http().get('/login').set('Accept-Language', 'en');
      assert.match(en.text, /autocomplete="username webauthn"/);
      assert.match(en.text, /Sign in with a passkey/);
      assert.match(en.text, /\/static\/js\/webauthn-login\.js/);
      const zh = await tg.http().get('/login').set('Accept-Language', 'zh-CN');
      assert.match(zh.text, /使用通行密钥登录/);
    });
  });

  describe(`passkey sign-in shares the sign-in rate limit (${dialect})`, () => {
    let tg: TestGateway;
    before(async () => {
      tg = await createTestGateway({ dialect, config: { ...WEBAUTHN_TEST_CONFIG, rateLimits: { enabled: true, loginPerIp: 3 } } });
    });
    after(async () => {
      await tg.close();
    });

    it('options and answers count against rateLimits.loginPerIp', async () => {
      const statuses: number[] = [];
      for (let i = 0; i < 2; i += 1) statuses.push((await tg.http().post('/v1/login/webauthn/options').send()).status);
      statuses.push((await tg.http().post('/v1/login/webauthn').send({ login_token: 'x', credential: {} })).status);
      const limited = await tg.http().post('/v1/login/webauthn/options').send();
      assert.deepEqual(statuses, [200, 200, 400]);
      assert.equal(limited.status, 429);
      assert.equal(limited.body.code, 'too_many_requests');
    });
  });
}
