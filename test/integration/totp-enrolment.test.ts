import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { FixedClock } from '../../src/clock.ts';
import { totpSecretAad, type TotpParams } from '../../src/factors/totp/index.ts';
import { base32Decode, timeStep } from '../../src/otp/index.ts';
import { SEALED_COLUMNS } from '../../src/store/sealed-columns.ts';
import { needTool } from '../helpers/env.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { hiddenField, type SignedIn, signIn } from '../helpers/session.ts';
import { makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';
import { oathtoolTotp } from '../helpers/totp.ts';

const ACTION = 'payment_code.issue';

function zbar(png: Buffer): string {
  const r = spawnSync('zbarimg', ['--quiet', '--raw', '-Sqrcode.enable', '-'], { input: png, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

for (const dialect of testDialects()) {
  describe(`authenticator-app enrolment (${dialect})`, () => {
    let tg: TestGateway;
    let pay: Awaited<ReturnType<typeof makeClient>>;

    before(async () => {
      tg = await createTestGateway({
        dialect,
        clock: new FixedClock(Date.UTC(2026, 4, 1, 9, 0, 3)),
        config: { totp: { allowedAlgorithms: ['SHA1', 'SHA256'], issuer: 'Stepgate Test' } },
      });
      await setPolicies(tg.gw, [{ id: 'totp', action: ACTION, priority: 1, require: { anyOf: [['totp']] }, acr: 'urn:stepgate:aal2' }]);
      pay = await makeClient(tg.gw, 'pay', [ACTION]);
    });
    after(async () => {
      await tg.close();
    });

    const now = () => Math.floor(tg.clock.now().getTime() / 1000);
    const api = (s: SignedIn) => ({
      post: (path: string, body?: Record<string, unknown>) => tg.http().post(path).set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send(body),
    });

    async function start(s: SignedIn, body?: Record<string, unknown>) {
      const res = await api(s).post('/v1/me/factors/totp', body);
      assert.equal(res.status, 201, res.text);
      const secret = base32Decode(res.body.secret as string)!;
      const params: TotpParams = { algorithm: res.body.algorithm, digits: res.body.digits, period: res.body.period };
      return { body: res.body, secret, params };
    }

    async function stepUp(username: string) {
      return tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: username, action: ACTION, context: {} });
    }

    it('start: a ≥ 20-byte secret, the otpauth URI, a QR code that decodes to it; pending until confirmed', async (t) => {
      await makeUser(tg.gw, 'alice');
      const s = await signIn(tg, 'alice', PASSWORD);
      const { body, secret } = await start(s);
      assert.equal(body.status, 'pending');
      assert.equal(secret.length, 20);
      assert.deepEqual([body.algorithm, body.digits, body.period], ['SHA1', 6, 30]);
      assert.equal(body.otpauth_uri, `otpauth://totp/Stepgate%20Test:alice?secret=${body.secret}&issuer=Stepgate%20Test&algorithm=SHA1&digits=6&period=30`);
      assert.match(body.qr_svg, /^<svg /);
      assert.equal(new Date(body.expires_at).getTime(), tg.clock.now().getTime() + tg.config.factors.pendingSeconds * 1000);
      // Sealed at rest, bound to its row, under the column master-key rotation re-seals.
      const row = await tg.gw.store.db.selectFrom('factors').selectAll().where('id', '=', body.factor_id).executeTakeFirstOrThrow();
      assert.equal(row.status, 'pending');
      assert.ok(row.secret_sealed !== null && !row.secret_sealed.includes(body.secret) && !row.secret_sealed.includes(secret.toString('base64url')));
      const column = SEALED_COLUMNS.find((c) => c.table === 'factors' && c.column === 'secret_sealed')!;
      assert.equal(column.aad(row.id), totpSecretAad(row.id));
      assert.deepEqual(tg.gw.sealer.unseal(row.secret_sealed, column.aad(row.id)), secret);
      // Pending factors are neither listed nor usable.
      const list = await tg.http().get('/v1/me/factors').set('Cookie', s.cookie);
      assert.ok(!list.body.factors.some((f: { type: string }) => f.type === 'totp'));
      assert.equal((await stepUp('alice')).body.code, 'enrollment_required');
      assert.ok(!tg.logs.text.includes(body.secret), 'the secret is never logged');
      if (needTool(t, 'zbarimg', 'zbar-tools')) return;
      assert.equal(zbar(Buffer.from(body.qr_png_base64, 'base64')), body.otpauth_uri);
    });

    it('confirm with an oathtool code: active, listed with label and algorithm; that code cannot be used for a step-up', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      await makeUser(tg.gw, 'bob');
      const s = await signIn(tg, 'bob', PASSWORD);
      const { body, secret, params } = await start(s, { label: 'My phone', algorithm: 'SHA256', digits: 8, periodSeconds: 60 });
      assert.equal(secret.length, 32, 'SHA256 gets a 32-byte secret');
      const wrong = await api(s).post(`/v1/me/factors/totp/${body.factor_id}/confirm`, { code: '00000000' });
      assert.equal(wrong.status, 401);
      assert.equal(wrong.body.code, 'factor_invalid');
      assert.equal(wrong.body.invalid_params[0].pointer, '/code');
      const code = oathtoolTotp(secret, params, now());
      const ok = await api(s).post(`/v1/me/factors/totp/${body.factor_id}/confirm`, { code });
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.body.status, 'active');
      assert.equal(ok.body.label, 'My phone');
      assert.deepEqual(ok.body.details, { algorithm: 'SHA256', digits: 8, period: 60 });
      const row = await tg.gw.store.db.selectFrom('factors').select(['counter', 'failures']).where('id', '=', body.factor_id).executeTakeFirstOrThrow();
      assert.deepEqual({ ...row }, { counter: timeStep(tg.clock.now(), 60), failures: 0 });

      const created = await stepUp('bob');
      assert.equal(created.status, 201, created.text);
      const { stepup_id: id, ticket } = created.body;
      const reuse = await tg.http().post(`/v1/stepup/${id}/verify`).set('Authorization', `Ticket ${ticket}`).send({ factor: 'totp', code });
      assert.equal(reuse.status, 401);
      assert.equal(reuse.body.code, 'factor_invalid');
      tg.clock.advance(60);
      const next = oathtoolTotp(secret, params, now());
      await tg.http().post(`/v1/stepup/${id}/verify`).set('Authorization', `Ticket ${ticket}`).send({ factor: 'totp', code: next }).expect(200);
      const list = await tg.http().get('/v1/me/factors').set('Cookie', s.cookie);
      const listed = list.body.factors.find((f: { id: string }) => f.id === body.factor_id);
      assert.equal(listed.last_used_at, tg.clock.now().toISOString());
      assert.equal(typeof listed.created_at, 'string');
      const audit = await tg.gw.store.db.selectFrom('audit_log').select('type').where('type', 'like', 'factor.%').where('actor', '=', s.userId).execute();
      assert.deepEqual(audit.map((a) => a.type), ['factor.enrolment_started', 'factor.enrolment_failed', 'factor.enrolled']);
    });

    it('bad input: parameters the configuration does not allow, unknown fields, no session, no CSRF, stale sign-in', async () => {
      await makeUser(tg.gw, 'carol');
      const s = await signIn(tg, 'carol', PASSWORD);
      const cases: [Record<string, unknown>, string][] = [
        [{ algorithm: 'SHA512' }, '/algorithm'],
        [{ algorithm: 'MD5' }, '/algorithm'],
        [{ digits: 7 }, '/digits'],
        [{ periodSeconds: 45 }, '/periodSeconds'],
        [{ label: '' }, '/label'],
        [{ secret: 'JBSWY3DPEHPK3PXP' }, '/secret'],
      ];
      for (const [body, pointer] of cases) {
        const res = await api(s).post('/v1/me/factors/totp', body);
        assert.equal(res.status, 400, `${JSON.stringify(body)} → ${res.text}`);
        assert.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8');
        assert.ok(res.body.invalid_params.some((p: { pointer: string }) => p.pointer === pointer), `${pointer} in ${res.text}`);
      }
      assert.equal((await tg.http().post('/v1/me/factors/totp').send({})).status, 401);
      assert.equal((await tg.http().post('/v1/me/factors/totp').set('Cookie', s.cookie).send({})).body.code, 'csrf_failed');
      const { body } = await start(s);
      const badCode = await api(s).post(`/v1/me/factors/totp/${body.factor_id}/confirm`, { code: 12345678 });
      assert.equal(badCode.status, 400);
      assert.equal(badCode.body.invalid_params[0].pointer, '/code');
      assert.equal((await api(s).post('/v1/me/factors/totp/fac_doesnotexist00/confirm', { code: '123456' })).status, 404);
      tg.clock.advance(tg.config.session.freshSeconds + 1);
      const stale = await api(s).post('/v1/me/factors/totp', {});
      assert.equal(stale.status, 401);
      assert.equal(stale.body.code, 'fresh_login_required');
      assert.equal((await api(s).post(`/v1/me/factors/totp/${body.factor_id}/confirm`, { code: '123456' })).body.code, 'fresh_login_required');
      // Nothing was enrolled by any of it.
      const rows = await tg.gw.store.db.selectFrom('factors').select('status').where('user_id', '=', s.userId).where('type', '=', 'totp').execute();
      assert.deepEqual(rows.map((r) => r.status), ['pending']);
    });

    it('wrong confirmation codes are limited, also in parallel: after 5 even the right code is refused; a new start works', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      await makeUser(tg.gw, 'dave');
      const s = await signIn(tg, 'dave', PASSWORD);
      const { body, secret, params } = await start(s);
      const right = oathtoolTotp(secret, params, now());
      const wrong = `${(Number(right[0]) + 1) % 10}${right.slice(1)}`;
      const results = await Promise.all(Array.from({ length: 8 }, () => api(s).post(`/v1/me/factors/totp/${body.factor_id}/confirm`, { code: wrong })));
      const codes = results.map((r) => r.body.code).sort();
      assert.deepEqual(codes, [...Array(3).fill('enrolment_attempts_exhausted'), ...Array(5).fill('factor_invalid')]);
      const late = await api(s).post(`/v1/me/factors/totp/${body.factor_id}/confirm`, { code: right });
      assert.equal(late.status, 429);
      assert.equal(late.body.code, 'enrolment_attempts_exhausted');
      const row = await tg.gw.store.db.selectFrom('factors').select('status').where('id', '=', body.factor_id).executeTakeFirstOrThrow();
      assert.equal(row.status, 'pending');
      const again = await start(s);
      assert.equal(await tg.gw.store.db.selectFrom('factors').select('id').where('id', '=', body.factor_id).executeTakeFirst(), undefined, 'a new start discards the dead one');
      await api(s).post(`/v1/me/factors/totp/${again.body.factor_id}/confirm`, { code: oathtoolTotp(again.secret, again.params, now()) }).expect(200);
    });

    it('an enrolment expires when not confirmed in time', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      await makeUser(tg.gw, 'erin');
      const s = await signIn(tg, 'erin', PASSWORD);
      const { body, secret, params } = await start(s);
      tg.clock.advance(tg.config.factors.pendingSeconds + 1);
      const s2 = await signIn(tg, 'erin', PASSWORD);
      const late = await api(s2).post(`/v1/me/factors/totp/${body.factor_id}/confirm`, { code: oathtoolTotp(secret, params, now()) });
      assert.equal(late.status, 404);
    });

    it('concurrent confirmations with the same code activate once', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      await makeUser(tg.gw, 'frank');
      const s = await signIn(tg, 'frank', PASSWORD);
      const { body, secret, params } = await start(s);
      const code = oathtoolTotp(secret, params, now());
      const results = await Promise.all(Array.from({ length: 10 }, () => api(s).post(`/v1/me/factors/totp/${body.factor_id}/confirm`, { code })));
      const statuses = results.map((r) => r.status);
      assert.equal(statuses.filter((x) => x === 200).length, 1, statuses.join(','));
      // The others: already confirmed, or beyond the 5 counted attempts.
      for (const r of results.filter((x) => x.status !== 200)) assert.ok(['conflict', 'not_found', 'enrolment_attempts_exhausted'].includes(r.body.code), r.text);
      const enrolled = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'factor.enrolled').where('subject', '=', s.userId).execute();
      assert.equal(enrolled.length, 1);
    });

    it('re-enrolment: the old app works until the new one is confirmed, then it is replaced; removal leaves none', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      await makeUser(tg.gw, 'grace');
      const s = await signIn(tg, 'grace', PASSWORD);
      const first = await start(s);
      await api(s).post(`/v1/me/factors/totp/${first.body.factor_id}/confirm`, { code: oathtoolTotp(first.secret, first.params, now()) }).expect(200);
      const second = await start(s);
      tg.clock.advance(30);
      // Not yet confirmed: the old app still completes a step-up.
      const a = (await stepUp('grace')).body;
      await tg.http().post(`/v1/stepup/${a.stepup_id}/verify`).set('Authorization', `Ticket ${a.ticket}`).send({ factor: 'totp', code: oathtoolTotp(first.secret, first.params, now()) }).expect(200);
      await api(s).post(`/v1/me/factors/totp/${second.body.factor_id}/confirm`, { code: oathtoolTotp(second.secret, second.params, now()) }).expect(200);
      const rows = await tg.gw.store.db.selectFrom('factors').select(['id', 'status']).where('user_id', '=', s.userId).where('type', '=', 'totp').execute();
      assert.deepEqual(rows.map((r) => [r.id, r.status]), [[second.body.factor_id, 'active']]);
      const removed = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'factor.removed').where('subject', '=', s.userId).execute();
      assert.deepEqual(JSON.parse(removed[0]!.data), { factorId: first.body.factor_id, factorType: 'totp', reason: 'replaced', replacedBy: second.body.factor_id });
      tg.clock.advance(30);
      const b = (await stepUp('grace')).body;
      const old = await tg.http().post(`/v1/stepup/${b.stepup_id}/verify`).set('Authorization', `Ticket ${b.ticket}`).send({ factor: 'totp', code: oathtoolTotp(first.secret, first.params, now()) });
      assert.equal(old.body.code, 'factor_invalid');
      await tg.http().post(`/v1/stepup/${b.stepup_id}/verify`).set('Authorization', `Ticket ${b.ticket}`).send({ factor: 'totp', code: oathtoolTotp(second.secret, second.params, now()) }).expect(200);
      const del = await tg.http().delete(`/v1/me/factors/${second.body.factor_id}`).set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf);
      assert.equal(del.status, 204);
      assert.equal((await stepUp('grace')).body.code, 'enrollment_required');
    });

    it('the "my security" page: set up an app by scanning the QR code shown, confirm, see it listed', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool') || needTool(t, 'zbarimg', 'zbar-tools')) return;
      await makeUser(tg.gw, 'heidi');
      const agent = tg.agent();
      const loginPage = await agent.get('/login');
      await agent.post('/login').type('form').send({ _login_csrf: hiddenField(loginPage.text, '_login_csrf'), username: 'heidi', password: PASSWORD }).expect(303);
      const page = await agent.get('/security').set('Accept-Language', 'en');
      assert.match(page.text, /data-section="totp"/);
      assert.match(page.text, /Set up an authenticator app/);
      const csrf = hiddenField(page.text, '_csrf');
      const enrol = await agent.post('/security/totp').type('form').send({ _csrf: csrf });
      assert.equal(enrol.status, 200, enrol.text);
      assert.equal(enrol.headers['cache-control'], 'no-store');
      const png = /src="data:image\/png;base64,([^"]+)"/.exec(enrol.text)?.[1];
      assert.ok(png !== undefined, 'QR image on the page');
      const uri = zbar(Buffer.from(png, 'base64'));
      assert.match(uri, /^otpauth:\/\/totp\/Stepgate%20Test:heidi\?secret=[A-Z2-7]{32}&/);
      const secret = base32Decode(new URL(uri).searchParams.get('secret')!)!;
      const params: TotpParams = { algorithm: 'SHA1', digits: 6, period: 30 };
      const action = /action="(\/security\/totp\/fac_[^"]+\/confirm)"/.exec(enrol.text)?.[1];
      assert.ok(action);
      const typo = await agent.post(action).type('form').send({ _csrf: csrf, code: '000000' });
      assert.equal(typo.status, 400);
      assert.match(typo.text, /That code did not match/);
      assert.equal(/src="data:image\/png;base64,([^"]+)"/.exec(typo.text)?.[1], png, 'the same QR code again');
      const done = await agent.post(action).type('form').send({ _csrf: csrf, code: oathtoolTotp(secret, params, now()) });
      assert.equal(done.status, 303);
      assert.equal(done.headers.location, '/security?notice=enrolled');
      const after = await agent.get('/security').set('Accept-Language', 'zh-CN');
      assert.match(after.text, /data-factor-type="totp"/);
      assert.match(after.text, /SHA1/);
      assert.match(after.text, /更换为新的应用/);
      // Without the session's CSRF token nothing starts.
      assert.equal((await agent.post('/security/totp').type('form').send({})).status, 403);
    });
  });
}
