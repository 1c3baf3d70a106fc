import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { hiddenField, signIn, confirmForTest } from '../helpers/session.ts';
import { makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

const RECOVER = 'account.recover';
const CODE = /^[0-9a-hjkmnp-tv-z]{4}(-[0-9a-hjkmnp-tv-z]{4}){3}$/;

for (const dialect of testDialects()) {
  describe(`recovery codes: generating and showing them (${dialect})`, () => {
    let tg: TestGateway;
    let b: TestGateway;
    let client: Awaited<ReturnType<typeof makeClient>>;

    before(async () => {
      tg = await createTestGateway({ dialect });
      b = await createTestGateway({ dialect, database: tg.database, clock: tg.clock });
      await setPolicies(tg.gw, [{ id: 'recover', action: RECOVER, priority: 10, require: { anyOf: [['recovery_code']] }, acr: 'urn:stepgate:aal1' }]);
      client = await makeClient(tg.gw, 'wallet', [RECOVER]);
    });
    after(async () => {
      await b.close();
      await tg.close();
    });

    async function useCode(username: string, code: string) {
      const s = await tg.http().post('/v1/stepup').set('Authorization', client.basic).send({ subject: username, action: RECOVER, context: {} });
      if (s.status !== 201) return s.status;
      return (await tg.http().post(`/v1/stepup/${s.body.stepup_id}/verify`).set('Authorization', `Ticket ${s.body.ticket}`).send({ factor: 'recovery_code', code })).status;
    }

    it('API: fresh sign-in and CSRF required; 10 codes shown once; listed with the number left; regenerating replaces the set', async () => {
      await makeUser(tg.gw, 'alice');
      const s = await signIn(tg, 'alice', PASSWORD);
      assert.equal((await tg.http().post('/v1/me/factors/recovery_code')).status, 401);
      assert.equal((await tg.http().post('/v1/me/factors/recovery_code').set('Cookie', s.cookie)).body.code, 'csrf_failed');
      const res = await tg.http().post('/v1/me/factors/recovery_code').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf);
      assert.equal(res.status, 201, res.text);
      assert.equal(res.headers['cache-control'], 'no-store');
      assert.equal(res.body.codes.length, 10);
      for (const c of res.body.codes) assert.match(c, CODE);
      assert.equal(res.body.replaced, false);
      const list = await tg.http().get('/v1/me/factors').set('Cookie', s.cookie);
      const listed = list.body.factors.find((f: { type: string }) => f.type === 'recovery_code');
      assert.deepEqual(listed.details, { remaining: 10 });
      assert.ok(!JSON.stringify(list.body).includes(res.body.codes[0]));
      assert.equal(await useCode('alice', res.body.codes[0]), 200);
      const again = await tg.http().post('/v1/me/factors/recovery_code').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf);
      assert.equal(again.status, 201);
      assert.equal(again.body.replaced, true);
      assert.equal(again.body.factor_id, res.body.factor_id);
      assert.equal(await useCode('alice', res.body.codes[1]), 401);
      assert.equal(await useCode('alice', again.body.codes[1]), 200);
      tg.clock.advance(tg.config.session.freshSeconds + 1);
      const stale = await tg.http().post('/v1/me/factors/recovery_code').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf);
      assert.equal(stale.status, 401);
      assert.equal(stale.body.code, 'fresh_login_required');
      assert.equal(await useCode('alice', again.body.codes[2]), 200, 'the refused request changed nothing');
      // Removal through the generic API ends recovery codes for the user.
      const s2 = await confirmForTest(tg, await signIn(tg, 'alice', PASSWORD));
      await tg.http().delete(`/v1/me/factors/${again.body.factor_id}`).set('Cookie', s2.cookie).set('X-CSRF-Token', s2.csrf).expect(204);
      assert.equal(await useCode('alice', again.body.codes[3]), 409, 'enrollment_required');
    });

    it('concurrent generation on two processes: all succeed one after the other, only the last set works', async () => {
      await makeUser(tg.gw, 'bob');
      const s = await signIn(tg, 'bob', PASSWORD);
      const results = await Promise.all(
        Array.from({ length: 6 }, (_, i) => (i % 2 === 0 ? tg : b).http().post('/v1/me/factors/recovery_code').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf)),
      );
      assert.deepEqual(results.map((r) => r.status), Array(6).fill(201), results.map((r) => r.text).join('\n'));
      const rows = await tg.gw.store.db.selectFrom('factors').select(['id', 'counter']).where('user_id', '=', s.userId).where('type', '=', 'recovery_code').execute();
      assert.equal(rows.length, 1);
      assert.equal(rows[0]!.counter, 5, 'five overwrites after the first insert');
      const working = [];
      for (const r of results) working.push(await useCode('bob', r.body.codes[0]));
      assert.equal(working.filter((x) => x === 200).length, 1, working.join(','));
    });

    it('the "my security" page: generate, see the codes once, then the count left', async () => {
      await makeUser(tg.gw, 'carol');
      const agent = tg.agent();
      const loginPage = await agent.get('/login');
      await agent.post('/login').type('form').send({ _login_csrf: hiddenField(loginPage.text, '_login_csrf'), username: 'carol', password: PASSWORD }).expect(303);
      const page = await agent.get('/security').set('Accept-Language', 'en');
      assert.match(page.text, /data-section="recovery_code"/);
      assert.match(page.text, /Generate recovery codes/);
      const shown = await agent.post('/security/recovery-codes').type('form').send({ _csrf: hiddenField(page.text, '_csrf') });
      assert.equal(shown.status, 200);
      assert.equal(shown.headers['cache-control'], 'no-store');
      const codes = [...shown.text.matchAll(/<li><code>([^<]+)<\/code><\/li>/g)].map((m) => m[1]!);
      assert.equal(codes.length, 10);
      for (const c of codes) assert.match(c, CODE);
      assert.equal(await useCode('carol', codes[9]!), 200);
      const after = await agent.get('/security').set('Accept-Language', 'zh-CN');
      assert.match(after.text, /剩余 9 个未使用的恢复码/);
      assert.match(after.text, /生成新的恢复码/);
      assert.ok(!after.text.includes(codes[0]!), 'never shown again');
      tg.clock.advance(tg.config.session.freshSeconds + 1);
      const stale = await agent.post('/security/recovery-codes').type('form').send({ _csrf: hiddenField(after.text, '_csrf') });
      assert.equal(stale.status, 303);
      assert.equal(stale.headers.location, '/login?reauth=1&next=%2Fsecurity');
    });
  });
}
