import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { FixedClock } from '../../src/clock.ts';
import { createSession } from '../../src/flows/sessions.ts';
import { createUser } from '../../src/flows/users.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { needOathtool } from '../helpers/hardware-tokens.ts';
import { cookieFrom } from '../helpers/session.ts';
import { testDialects } from '../helpers/stores.ts';
import { DEFAULT_TOTP, insertActiveTotp, oathtoolTotp } from '../helpers/totp.ts';

/**
 * With `admin.apiRequiresSecondFactor` (the default outside the test helper), the admin JSON
 * API answers a staff session only after POST /v1/session/second-factor (or a passkey
 * sign-in): 403 `second_factor_required` before, and nothing changes.
 */

const PASSWORD = 'second factor passphrase 88';
const T0 = Date.UTC(2026, 11, 1, 10, 0, 0);

for (const dialect of testDialects()) {
  describe(`admin API second-factor gate (${dialect})`, () => {
    let t: TestGateway;
    const ids: Record<string, string> = {};
    const secrets: Record<string, Buffer> = {};
    let step = 0;

    function code(who: string): string {
      step += 1;
      t.clock.set(T0 + step * 30_000);
      return oathtoolTotp(secrets[who] as Buffer, DEFAULT_TOTP, Math.floor(t.clock.now().getTime() / 1000));
    }

    async function signIn(username: string) {
      const res = await t.http().post('/v1/login').send({ username, password: PASSWORD });
      assert.equal(res.status, 200, res.text);
      return { cookie: `stepgate_session=${cookieFrom(res)}`, csrf: res.body.csrf_token as string, expiresAt: res.body.expires_at as string };
    }

    before(async () => {
      t = await createTestGateway({ dialect, clock: new FixedClock(T0), config: { admin: { apiRequiresSecondFactor: true } } });
      for (const [username, roles] of [['root', ['admin']], ['two', ['admin']], ['lena', []]] as const) {
        const u = await createUser(t.gw, { username, password: PASSWORD, roles: [...roles] }, { actor: null });
        ids[username] = u.id;
      }
      secrets.root = (await insertActiveTotp(t.gw, ids.root as string)).secret;
      secrets.two = (await insertActiveTotp(t.gw, ids.two as string)).secret;
      await insertActiveTotp(t.gw, ids.two as string);
    });
    after(async () => t.close());

    it('a password-only staff session gets 403 second_factor_required on the admin API and changes nothing', async () => {
      const s = await signIn('root');
      const list = await t.http().get('/v1/admin/users').set('Cookie', s.cookie);
      assert.equal(list.status, 403);
      assert.equal(list.body.code, 'second_factor_required');
      const create = await t.http().post('/v1/admin/users').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ username: 'mallory', password: 'a long password 1234' });
      assert.equal(create.status, 403);
      assert.equal(await t.gw.store.db.selectFrom('users').select('id').where('username', '=', 'mallory').executeTakeFirst(), undefined);
      for (const path of ['/v1/admin/policies', '/v1/admin/clients', '/v1/admin/hardware-tokens', '/v1/admin/audit']) {
        assert.equal((await t.http().get(path).set('Cookie', s.cookie)).status, 403, path);
      }
      // Without a session it stays 401; a user without a staff role is not asked for one (403 forbidden as before).
      assert.equal((await t.http().get('/v1/admin/users')).status, 401);
      const lena = await signIn('lena');
      const forbidden = await t.http().get('/v1/admin/users').set('Cookie', lena.cookie);
      assert.equal(forbidden.status, 403);
      assert.equal(forbidden.body.code, 'forbidden');
    });

    it('POST /v1/session/second-factor: CSRF, bad input, a wrong code, then the right one; the session is replaced', async (tc) => {
      if (needOathtool(tc)) return;
      const s = await signIn('root');
      const signedInExpiry = s.expiresAt;
      const noCsrf = await t.http().post('/v1/session/second-factor').set('Cookie', s.cookie).send({ code: '123456' });
      assert.equal(noCsrf.status, 403);
      assert.equal(noCsrf.body.code, 'csrf_failed');
      const bad = await t.http().post('/v1/session/second-factor').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ code: '12ab' });
      assert.equal(bad.status, 400);
      assert.equal(bad.body.invalid_params[0].pointer, '/code');
      const wrong = await t.http().post('/v1/session/second-factor').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ code: '000000' });
      assert.equal(wrong.status, 401);
      assert.equal(wrong.body.code, 'factor_invalid');
      assert.equal((await t.http().get('/v1/admin/users').set('Cookie', s.cookie)).status, 403);

      const ok = await t.http().post('/v1/session/second-factor').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ code: code('root') });
      assert.equal(ok.status, 200, ok.text);
      assert.deepEqual([...ok.body.amr].sort(), ['mfa', 'otp', 'pwd']);
      const cookie = `stepgate_session=${cookieFrom(ok)}`;
      assert.notEqual(cookie, s.cookie);
      // The new session ends when the password sign-in's would have (a code never extends a sign-in).
      assert.equal(ok.body.expires_at, signedInExpiry);
      assert.notEqual(ok.body.csrf_token, s.csrf);
      assert.equal((await t.http().get('/v1/admin/users').set('Cookie', s.cookie)).status, 401, 'the old session id is gone');
      const list = await t.http().get('/v1/admin/users').set('Cookie', cookie);
      assert.equal(list.status, 200);
      const create = await t.http().post('/v1/admin/users').set('Cookie', cookie).set('X-CSRF-Token', ok.body.csrf_token).send({ username: 'newbie', password: 'a long password 1234' });
      assert.equal(create.status, 201, create.text);
    });

    it('a code typed in full-width digits (a Chinese IME) or grouped with a space is the same code', async (tc) => {
      if (needOathtool(tc)) return;
      const s = await signIn('root');
      const ascii = code('root');
      const fullWidth = `${String.fromCodePoint(...[...ascii.slice(0, 3)].map((d) => 0xff10 + Number(d)))} ${String.fromCodePoint(...[...ascii.slice(3)].map((d) => 0xff10 + Number(d)))}`;
      assert.notEqual(fullWidth, ascii);
      const ok = await t.http().post('/v1/session/second-factor').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ code: fullWidth });
      assert.equal(ok.status, 200, ok.text);
      const tooLong = await t.http().post('/v1/session/second-factor').set('Cookie', `stepgate_session=${cookieFrom(ok)}`).set('X-CSRF-Token', ok.body.csrf_token).send({ code: '1'.repeat(65) });
      assert.equal(tooLong.status, 400);
      assert.equal(tooLong.body.invalid_params[0].pointer, '/code');
    });

    it('several factors: factor_id must name one of them', async (tc) => {
      if (needOathtool(tc)) return;
      const s = await signIn('two');
      const ambiguous = await t.http().post('/v1/session/second-factor').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ code: code('two') });
      assert.equal(ambiguous.status, 400);
      assert.equal(ambiguous.body.invalid_params[0].pointer, '/factor_id');
      const other = await t.http().post('/v1/session/second-factor').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ code: code('two'), factor_id: 'fac_not_mine' });
      assert.equal(other.status, 400);
      const factorId = (await t.gw.store.db.selectFrom('factors').select('id').where('user_id', '=', ids.two as string).where('type', '=', 'totp').orderBy('created_at').executeTakeFirstOrThrow()).id;
      const ok = await t.http().post('/v1/session/second-factor').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ code: code('two'), factor_id: factorId });
      assert.equal(ok.status, 200, ok.text);
    });

    it('a passkey session needs nothing more', async () => {
      const session = await createSession(t.gw, ids.root as string, ['hwk', 'user']);
      assert.equal((await t.http().get('/v1/admin/users').set('Cookie', `stepgate_session=${session.sessionId}`)).status, 200);
    });
  });
}
