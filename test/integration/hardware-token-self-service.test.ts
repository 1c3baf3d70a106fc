import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { importTokenFile } from '../../src/flows/hardware-token-import.ts';
import { bindOwnToken } from '../../src/flows/hardware-tokens.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { needOathtool, oathHotp, randomSeedHex } from '../helpers/hardware-tokens.ts';
import { hiddenField, signIn } from '../helpers/session.ts';
import { makeUser, PASSWORD } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

for (const dialect of testDialects()) {
  describe(`hardware tokens: self-service (${dialect})`, () => {
    let tg: TestGateway;
    const seeds: Record<string, string> = {};
    let n = 0;

    async function stock(): Promise<string> {
      n += 1;
      const serial = `SELF-${n}`;
      seeds[serial] = randomSeedHex();
      await importTokenFile(tg.gw, { data: Buffer.from(`${serial},${seeds[serial]},hotp,6,0,SHA1\n`), fileName: 'stock.csv', source: 'cli' }, { actor: 'test' });
      return serial;
    }

    async function state(serial: string) {
      return tg.gw.store.db.selectFrom('hardware_tokens').select(['state', 'user_id', 'counter']).where('serial', '=', serial).executeTakeFirstOrThrow();
    }

    before(async () => {
      tg = await createTestGateway({ dialect, config: { session: { freshSeconds: 300 } } });
      await makeUser(tg.gw, 'uma');
      await makeUser(tg.gw, 'vic');
    });
    after(async () => {
      await tg.close();
    });

    it('JSON API: bind needs CSRF and a fresh sign-in; bound, listed, resynchronised, given back, reported lost', async (t) => {
      if (needOathtool(t)) return;
      const serial = await stock();
      const seed = seeds[serial] as string;
      const s = await signIn(tg, 'uma', PASSWORD);
      const body = { serial: serial.toLowerCase(), code: oathHotp(seed, 0), label: 'Bank fob' };
      const noCsrf = await tg.http().post('/v1/me/factors/hardware_otp').set('Cookie', s.cookie).send(body);
      assert.equal(noCsrf.status, 403);
      const bad = await tg.http().post('/v1/me/factors/hardware_otp').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ serial, code: '12ab56' });
      assert.equal(bad.status, 400);
      assert.deepEqual(bad.body.invalid_params.map((p: { pointer: string }) => p.pointer), ['/code']);
      const wrong = await tg.http().post('/v1/me/factors/hardware_otp').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ ...body, code: oathHotp(seed, 50) });
      const unknown = await tg.http().post('/v1/me/factors/hardware_otp').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ ...body, serial: 'NOT-IN-STOCK' });
      for (const r of [wrong, unknown]) {
        assert.equal(r.status, 400);
        assert.equal(r.body.code, 'token_bind_failed');
      }
      assert.equal(JSON.stringify({ ...wrong.body, request_id: 0 }), JSON.stringify({ ...unknown.body, request_id: 0 }));

      tg.clock.advance(301);
      const stale = await tg.http().post('/v1/me/factors/hardware_otp').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send(body);
      assert.equal(stale.status, 401);
      assert.equal(stale.body.code, 'fresh_login_required');
      const s2 = await signIn(tg, 'uma', PASSWORD);
      const bound = await tg.http().post('/v1/me/factors/hardware_otp').set('Cookie', s2.cookie).set('X-CSRF-Token', s2.csrf).send(body);
      assert.equal(bound.status, 201, JSON.stringify(bound.body));
      assert.equal(bound.body.factor.type, 'hardware_otp');
      assert.equal(bound.body.factor.label, 'Bank fob');
      assert.deepEqual(bound.body.factor.details, { algorithm: 'SHA1', digits: 6, serial, tokenType: 'event' });
      const id = bound.body.factor.id as string;
      const list = await tg.http().get('/v1/me/factors').set('Cookie', s2.cookie);
      assert.ok(list.body.factors.some((f: { id: string }) => f.id === id));
      assert.ok(!JSON.stringify(list.body).includes(seed));

      const resync = await tg.http().post(`/v1/me/factors/hardware_otp/${id}/resync`).set('Cookie', s2.cookie).set('X-CSRF-Token', s2.csrf).send({ code: oathHotp(seed, 70), next_code: oathHotp(seed, 71) });
      assert.equal(resync.status, 200, JSON.stringify(resync.body));
      const badResync = await tg.http().post(`/v1/me/factors/hardware_otp/${id}/resync`).set('Cookie', s2.cookie).set('X-CSRF-Token', s2.csrf).send({ code: oathHotp(seed, 80), next_code: oathHotp(seed, 82) });
      assert.equal(badResync.body.code, 'token_resync_failed');

      // Another user cannot touch it.
      const v = await signIn(tg, 'vic', PASSWORD);
      assert.equal((await tg.http().post(`/v1/me/factors/hardware_otp/${id}/lost`).set('Cookie', v.cookie).set('X-CSRF-Token', v.csrf)).status, 404);
      assert.equal((await tg.http().delete(`/v1/me/factors/${id}`).set('Cookie', v.cookie).set('X-CSRF-Token', v.csrf)).status, 404);

      // Giving it back through the framework's DELETE returns it to stock with its counter.
      const removed = await tg.http().delete(`/v1/me/factors/${id}`).set('Cookie', s2.cookie).set('X-CSRF-Token', s2.csrf);
      assert.equal(removed.status, 204);
      assert.deepEqual({ ...(await state(serial)) }, { state: 'unassigned', user_id: null, counter: 72 });
      const events = (await tg.gw.store.db.selectFrom('audit_log').select('type').orderBy('seq', 'desc').limit(2).execute()).map((e) => e.type);
      assert.deepEqual(events, ['factor.removed', 'hardware_token.unassigned']);

      // vic binds it now (an old code no longer works), then reports it lost.
      assert.equal((await tg.http().post('/v1/me/factors/hardware_otp').set('Cookie', v.cookie).set('X-CSRF-Token', v.csrf).send({ serial, code: oathHotp(seed, 71) })).body.code, 'token_bind_failed');
      const vb = await tg.http().post('/v1/me/factors/hardware_otp').set('Cookie', v.cookie).set('X-CSRF-Token', v.csrf).send({ serial, code: oathHotp(seed, 72) });
      assert.equal(vb.status, 201);
      const lost = await tg.http().post(`/v1/me/factors/hardware_otp/${vb.body.factor.id}/lost`).set('Cookie', v.cookie).set('X-CSRF-Token', v.csrf);
      assert.equal(lost.status, 204);
      assert.equal((await state(serial)).state, 'lost');
      assert.ok(!(await tg.http().get('/v1/me/factors').set('Cookie', v.cookie)).body.factors.some((f: { type: string }) => f.type === 'hardware_otp'));
    });

    it('the /security page: the section, binding by form, a refusal notice, Chinese strings', async (t) => {
      if (needOathtool(t)) return;
      const serial = await stock();
      const seed = seeds[serial] as string;
      const s = await signIn(tg, 'vic', PASSWORD);
      const page = await tg.http().get('/security').set('Cookie', s.cookie);
      assert.equal(page.status, 200);
      assert.match(page.text, /action="\/security\/hardware-otp\/bind"/);
      const csrf = hiddenField(page.text, '_csrf');
      const refused = await tg.http().post('/security/hardware-otp/bind').set('Cookie', s.cookie).type('form').send({ _csrf: csrf, serial, code: '000000' });
      assert.equal(refused.status, 303);
      assert.equal(refused.headers.location, '/security?notice=hwBindFailed#hardware-otp');
      const noCsrf = await tg.http().post('/security/hardware-otp/bind').set('Cookie', s.cookie).type('form').send({ serial, code: oathHotp(seed, 0) });
      assert.equal(noCsrf.status, 403);
      const ok = await tg.http().post('/security/hardware-otp/bind').set('Cookie', s.cookie).type('form').send({ _csrf: csrf, serial, code: oathHotp(seed, 0), next_code: '' });
      assert.equal(ok.status, 303);
      assert.equal(ok.headers.location, '/security?notice=enrolled#hardware-otp');
      const after = await tg.http().get('/security?notice=enrolled').set('Cookie', s.cookie);
      assert.match(after.text, /action="\/security\/hardware-otp\/fac_[^/"]+\/resync"/);
      assert.ok(after.text.includes(serial));
      const zh = await tg.http().get('/security?notice=hwBindFailed').set('Cookie', s.cookie).set('Accept-Language', 'zh-CN');
      assert.ok(zh.text.includes('硬件令牌'));
      assert.ok(zh.text.includes('序列号或动态口令不正确'));
      tg.clock.advance(301);
      const stale = await tg.http().get('/security').set('Cookie', s.cookie);
      assert.ok(!stale.text.includes('action="/security/hardware-otp/bind"'));
      const staleBind = await tg.http().post('/security/hardware-otp/bind').set('Cookie', s.cookie).type('form').send({ _csrf: csrf, serial, code: oathHotp(seed, 1) });
      assert.equal(staleBind.status, 303);
      assert.match(staleBind.headers.location ?? '', /^\/login\?reauth=1/);
    });

    it('codes typed in full-width digits (a Chinese IME) bind and resync; anything else still 400', async (t) => {
      if (needOathtool(t)) return;
      const serial = await stock();
      const seed = seeds[serial] as string;
      const wide = (code: string) => code.replace(/[0-9]/g, (d) => String.fromCharCode(0xff10 + Number(d)));
      await makeUser(tg.gw, `ime-${dialect}`);
      const s = await signIn(tg, `ime-${dialect}`, PASSWORD);
      const post = (path: string, body: object) => tg.http().post(path).set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send(body);
      const bad = await post('/v1/me/factors/hardware_otp', { serial, code: wide('12a456') });
      assert.equal(bad.status, 400);
      assert.deepEqual(bad.body.invalid_params.map((p: { pointer: string }) => p.pointer), ['/code']);
      const bound = await post('/v1/me/factors/hardware_otp', { serial, code: wide(oathHotp(seed, 0)) });
      assert.equal(bound.status, 201, JSON.stringify(bound.body));
      const resync = await post(`/v1/me/factors/hardware_otp/${bound.body.factor.id}/resync`, { code: wide(oathHotp(seed, 30)), next_code: ` ${oathHotp(seed, 31)} ` });
      assert.equal(resync.status, 200, JSON.stringify(resync.body));
      const factor = await tg.gw.store.db.selectFrom('factors').select('counter').where('id', '=', bound.body.factor.id).executeTakeFirstOrThrow();
      assert.equal(Number(factor.counter), 32);
      // The page's fields let the browser submit such a code too (HTML pattern: the whole value, v flag).
      const page = await tg.http().get('/security').set('Cookie', s.cookie);
      const fields = [...page.text.matchAll(/<input id="(?:hw|resync)-(?:code|next)[^"]*"[^>]*pattern="([^"]+)"[^>]*maxlength="(\d+)"/g)];
      assert.equal(fields.length, 4);
      for (const [, pattern, max] of fields) {
        const typed = `${wide('123')} ${wide('456')}`;
        assert.ok(new RegExp(`^(?:${pattern})$`, 'v').test(typed) && typed.length <= Number(max), pattern);
        assert.ok(!new RegExp(`^(?:${pattern})$`, 'v').test('12a456'), pattern);
      }
    });

    it('a serial in stock, an unknown one and someone else\'s cost the same writes (no serial enumeration by timing)', async (t) => {
      if (needOathtool(t)) return;
      const inStock = await stock();
      const taken = await stock();
      const owner = await makeUser(tg.gw, `owner-${dialect}`);
      await bindOwnToken(tg.gw, owner.id, { serial: taken, code: oathHotp(seeds[taken] as string, 0) }, { actor: owner.id });
      const prober = await makeUser(tg.gw, `prober-${dialect}`);
      const attempt = async (serial: string) => {
        const flushes = tg.gw.store.commitStats?.flushes ?? 0;
        await assert.rejects(bindOwnToken(tg.gw, prober.id, { serial, code: '000000' }, { actor: prober.id }), { code: 'token_bind_failed' });
        return (tg.gw.store.commitStats?.flushes ?? 0) - flushes;
      };
      await attempt('WARM-UP');
      const costs = { inStock: await attempt(inStock), unknown: await attempt('NOT-IN-STOCK-9'), taken: await attempt(taken) };
      // Every attempt was charged (per user) all the same, and only the stock token's per serial.
      assert.equal(Number((await tg.gw.store.db.selectFrom('hardware_token_bind_throttle').select('failures').where('user_id', '=', prober.id).executeTakeFirstOrThrow()).failures), 4);
      assert.equal(Number((await tg.gw.store.db.selectFrom('hardware_tokens').select('bind_failures').where('serial', '=', inStock).executeTakeFirstOrThrow()).bind_failures), 1);
      // SQLite counts its durable commits (WAL fsyncs): the charge and the audit event, whatever the serial.
      if (dialect === 'sqlite') assert.deepEqual(costs, { inStock: 2, unknown: 2, taken: 2 });
    });
  });
}
