import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { activatePendingFactor, insertPendingFactor, listUserFactors } from '../../src/flows/factors.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { makeUser, PASSWORD } from '../helpers/stepup-fixtures.ts';
import { cookieFrom, hiddenField, signIn, confirmForTest } from '../helpers/session.ts';
import { testDialects } from '../helpers/stores.ts';

for (const dialect of testDialects()) {
  describe(`self-service factors (${dialect})`, () => {
    let tg: TestGateway;
    let userId: string;
    let otherId: string;

    before(async () => {
      tg = await createTestGateway({ dialect, config: { session: { freshSeconds: 300 }, factors: { maxPerType: 3 } } });
      userId = (await makeUser(tg.gw, 'dora')).id;
      otherId = (await makeUser(tg.gw, 'eve')).id;
    });
    after(async () => {
      await tg.close();
    });

    async function addActive(owner: string, type: 'totp' | 'sms_otp', label = 'phone'): Promise<string> {
      return tg.gw.store.db.transaction().execute(async (tx) => {
        const id = await insertPendingFactor(tg.gw, tx, { userId: owner, type, label, params: { algorithm: 'SHA1', digits: 6, internal: 'not shown' } });
        assert.equal(await activatePendingFactor(tg.gw, tx, owner, id, {}, { actor: owner }), true);
        return id;
      });
    }

    it('lists the signed-in user\'s factors with public details only; 401 without a session', async () => {
      assert.equal((await tg.http().get('/v1/me/factors')).status, 401);
      const s = await signIn(tg, 'dora', PASSWORD);
      const id = await addActive(userId, 'totp', 'Phone app');
      const res = await tg.http().get('/v1/me/factors').set('Cookie', s.cookie);
      assert.equal(res.status, 200);
      assert.equal(res.headers['cache-control'], 'no-store');
      const types = res.body.factors.map((f: { type: string }) => f.type).sort();
      assert.deepEqual(types, ['password', 'totp']);
      const totp = res.body.factors.find((f: { id: string }) => f.id === id);
      assert.deepEqual(totp.details, { algorithm: 'SHA1', digits: 6 });
      assert.equal(totp.label, 'Phone app');
      assert.equal(totp.last_used_at, null);
      assert.ok(!JSON.stringify(res.body).includes('secret'));
    });

    it('rename: CSRF required, label validated with a pointer, another user\'s factor is 404', async () => {
      const s = await signIn(tg, 'dora', PASSWORD);
      const id = await addActive(userId, 'sms_otp');
      const noCsrf = await tg.http().patch(`/v1/me/factors/${id}`).set('Cookie', s.cookie).send({ label: 'x' });
      assert.equal(noCsrf.status, 403);
      assert.equal(noCsrf.body.code, 'csrf_failed');
      const bad = await tg.http().patch(`/v1/me/factors/${id}`).set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ label: '   ' });
      assert.equal(bad.status, 400);
      assert.equal(bad.body.invalid_params[0].pointer, '/label');
      const unknownField = await tg.http().patch(`/v1/me/factors/${id}`).set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ label: 'a', status: 'active' });
      assert.equal(unknownField.status, 400);
      const ok = await tg.http().patch(`/v1/me/factors/${id}`).set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ label: '  Work phone ' });
      assert.equal(ok.status, 200);
      assert.equal(ok.body.label, 'Work phone');
      const foreign = await addActive(otherId, 'sms_otp');
      const notMine = await tg.http().patch(`/v1/me/factors/${foreign}`).set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ label: 'mine now' });
      assert.equal(notMine.status, 404);
      const garbage = await tg.http().patch('/v1/me/factors/not-an-id').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ label: 'a' });
      assert.equal(garbage.status, 404);
    });

    it('remove needs a fresh sign-in; the password cannot be removed; removal is audited', async () => {
      const s = await signIn(tg, 'dora', PASSWORD);
      const id = await addActive(userId, 'sms_otp');
      tg.clock.advance(301);
      const stale = await tg.http().delete(`/v1/me/factors/${id}`).set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf);
      assert.equal(stale.status, 401);
      assert.equal(stale.body.code, 'fresh_login_required');
      const s2 = await confirmForTest(tg, await signIn(tg, 'dora', PASSWORD));
      const del = await tg.http().delete(`/v1/me/factors/${id}`).set('Cookie', s2.cookie).set('X-CSRF-Token', s2.csrf);
      assert.equal(del.status, 204);
      assert.equal((await tg.http().delete(`/v1/me/factors/${id}`).set('Cookie', s2.cookie).set('X-CSRF-Token', s2.csrf)).status, 404);
      const password = (await listUserFactors(tg.gw, userId)).find((f) => f.type === 'password')!;
      const pw = await tg.http().delete(`/v1/me/factors/${password.id}`).set('Cookie', s2.cookie).set('X-CSRF-Token', s2.csrf);
      assert.equal(pw.status, 403);
      const audit = await tg.gw.store.db.selectFrom('audit_log').select(['type', 'data']).where('type', '=', 'factor.removed').execute();
      assert.ok(audit.some((a) => a.data.includes(id)));
    });

    it('pending enrolments: invisible until activated, replaced by a new start, expire, and activate exactly once under concurrency', async () => {
      const pendingId = await tg.gw.store.db.transaction().execute((tx) => insertPendingFactor(tg.gw, tx, { userId, type: 'totp', label: 'new app' }));
      assert.ok(!(await listUserFactors(tg.gw, userId)).some((f) => f.id === pendingId));
      assert.ok((await listUserFactors(tg.gw, userId, { includePending: true })).some((f) => f.id === pendingId));
      const results = await Promise.all(
        Array.from({ length: 10 }, () => tg.gw.store.db.transaction().execute((tx) => activatePendingFactor(tg.gw, tx, userId, pendingId, {}, { actor: userId }))),
      );
      assert.equal(results.filter(Boolean).length, 1);
      const enrolled = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'factor.enrolled').execute();
      assert.equal(enrolled.filter((e) => e.data.includes(pendingId)).length, 1);

      const p1 = await tg.gw.store.db.transaction().execute((tx) => insertPendingFactor(tg.gw, tx, { userId, type: 'sms_otp', label: 'a' }));
      const p2 = await tg.gw.store.db.transaction().execute((tx) => insertPendingFactor(tg.gw, tx, { userId, type: 'sms_otp', label: 'b' }));
      const pending = (await listUserFactors(tg.gw, userId, { includePending: true })).filter((f) => f.status === 'pending');
      assert.deepEqual(pending.map((f) => f.id), [p2]);
      assert.ok(!pending.some((f) => f.id === p1));
      tg.clock.advance(tg.config.factors.pendingSeconds + 1);
      assert.ok(!(await listUserFactors(tg.gw, userId, { includePending: true })).some((f) => f.id === p2));
    });

    it('limits active factors per type', async () => {
      const u = await makeUser(tg.gw, 'fred');
      for (let i = 0; i < 3; i += 1) await addActive(u.id, 'sms_otp');
      await assert.rejects(
        tg.gw.store.db.transaction().execute((tx) => insertPendingFactor(tg.gw, tx, { userId: u.id, type: 'sms_otp', label: 'one more' })),
        (err: { code?: string }) => err.code === 'conflict',
      );
    });

    it('the "my security" page: redirects to sign-in, lists factors, asks for a fresh sign-in before removing', async () => {
      const anon = await tg.http().get('/security');
      assert.equal(anon.status, 303);
      assert.equal(anon.headers.location, '/login?next=%2Fsecurity');

      const u = await makeUser(tg.gw, 'gina');
      const smsId = await addActive(u.id, 'sms_otp', 'My phone');
      const agent = tg.agent();
      const loginPage = await agent.get('/login');
      const signed = await agent.post('/login').type('form').send({ _login_csrf: hiddenField(loginPage.text, '_login_csrf'), username: 'gina', password: PASSWORD });
      assert.equal(signed.status, 303);
      assert.ok(cookieFrom(signed));
      const page = await agent.get('/security').set('Accept-Language', 'en');
      assert.equal(page.status, 200);
      assert.match(page.text, /My phone/);
      assert.match(page.text, /data-factor-type="password"/);
      const csrf = hiddenField(page.text, '_csrf');

      tg.clock.advance(301);
      const stale = await agent.post(`/security/factors/${smsId}/remove`).type('form').send({ _csrf: csrf });
      assert.equal(stale.status, 303);
      assert.equal(stale.headers.location, '/login?reauth=1&next=%2Fsecurity');
      const reauthPage = await agent.get(stale.headers.location);
      assert.match(reauthPage.text, /name="username"[^>]*value="gina"[^>]*readonly/);
      const reauth = await agent.post('/login').type('form').send({
        _login_csrf: hiddenField(reauthPage.text, '_login_csrf'), _csrf: hiddenField(reauthPage.text, '_csrf'), reauth: '1', next: '/security', username: 'gina', password: PASSWORD,
      });
      assert.equal(reauth.status, 303);
      assert.equal(reauth.headers.location, '/security');
      // Fresh, but with the password only: the phone she had before signing in must confirm first.
      const fresh = await agent.get('/security').set('Accept-Language', 'en');
      assert.match(fresh.text, /href="\/security\/confirm"/);
      const unconfirmed = await agent.post(`/security/factors/${smsId}/remove`).type('form').send({ _csrf: hiddenField(fresh.text, '_csrf') });
      assert.equal(unconfirmed.status, 303);
      assert.equal(unconfirmed.headers.location, '/security/confirm');
      await confirmForTest(tg, { cookie: `stepgate_session=${cookieFrom(reauth)}`, csrf: '', userId: u.id });
      const removed = await agent.post(`/security/factors/${smsId}/remove`).type('form').send({ _csrf: hiddenField(fresh.text, '_csrf') });
      assert.equal(removed.status, 303);
      assert.equal(removed.headers.location, '/security?notice=removed');
      const after = await agent.get('/security?notice=removed').set('Accept-Language', 'zh-CN');
      assert.doesNotMatch(after.text, /My phone/);
      assert.match(after.text, /已删除该验证方式/);
      // A form without the session's CSRF token changes nothing.
      const forged = await agent.post(`/security/factors/${smsId}/rename`).type('form').send({ label: 'x' });
      assert.equal(forged.status, 403);
    });
  });
}
