import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { runMaintenance } from '../../src/flows/maintenance.ts';
import { deviceCookieName } from '../../src/http/session.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { cookieFrom } from '../helpers/session.ts';
import { makeUser, PASSWORD } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * Sign-ins from a new browser (src/flows/known-devices.ts): the device cookie recognises a
 * browser per user; a sign-in from one the user never used is audited as login.new_device and
 * queued for the security-notification webhook; the first sign-in the gateway sees is not.
 * The cookie authenticates nothing.
 */
const CHROME = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';
const IPHONE = 'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1';

for (const dialect of testDialects()) {
  describe(`sign-ins from a new browser (${dialect})`, () => {
    let tg: TestGateway;

    before(async () => {
      // A webhook that is never called here: it makes login.new_device be queued.
      tg = await createTestGateway({ dialect, config: { notifications: { webhook: { url: 'http://127.0.0.1:9/unused', secret: 'x'.repeat(40) } } } });
    });
    after(async () => {
      await tg?.close();
    });

    async function signIn(username: string, ua: string, device?: string) {
      const req = tg.http().post('/v1/login').set('User-Agent', ua);
      if (device !== undefined) req.set('Cookie', `stepgate_device=${device}`);
      const res = await req.send({ username, password: PASSWORD });
      assert.equal(res.status, 200, res.text);
      return { res, device: cookieFrom(res, 'stepgate_device') };
    }
    const newDeviceEvents = (userId: string) => tg.gw.store.db.selectFrom('audit_log').select(['data', 'ip']).where('subject', '=', userId).where('type', '=', 'login.new_device').execute();
    const queued = (userId: string) => tg.gw.store.db.selectFrom('notification_outbox').select('type').where('user_id', '=', userId).execute();

    it('the first sign-in remembers the browser quietly; the same browser again is known; another one is reported and queued', async () => {
      const u = await makeUser(tg.gw, 'vera');
      const first = await signIn('vera', CHROME);
      assert.ok(first.device !== undefined && /^[A-Za-z0-9_-]{43}$/.test(first.device), 'a device cookie');
      const raw = String(first.res.headers['set-cookie']);
      assert.match(raw, /stepgate_device=[^;]+; Max-Age=34560000;.*HttpOnly/);
      assert.deepEqual(await newDeviceEvents(u.id), [], 'the first sign-in is nothing unusual');
      const again = await signIn('vera', CHROME, first.device);
      assert.equal(again.device, first.device, 'the same browser keeps its cookie');
      assert.deepEqual(await newDeviceEvents(u.id), []);

      await signIn('vera', IPHONE);
      const events = await newDeviceEvents(u.id);
      assert.equal(events.length, 1);
      assert.deepEqual({ ...JSON.parse(events[0]!.data), user_agent: undefined }, { method: 'password', device: 'Safari 18 on iPhone', user_agent: undefined });
      assert.match(String(events[0]!.ip), /127\.0\.0\.1/);
      assert.deepEqual((await queued(u.id)).map((r) => r.type), ['login.new_device']);
      // Stored as a session keeps it: bounded, without control characters.
      await signIn('vera', `${IPHONE}\t${'z'.repeat(400)}`);
      const long = await newDeviceEvents(u.id);
      const ua = String(JSON.parse(long[1]!.data).user_agent);
      assert.equal(ua.length, 256);
      assert.ok(!ua.includes('\t'));
      const rows = await tg.gw.store.db.selectFrom('known_devices').selectAll().where('user_id', '=', u.id).execute();
      assert.equal(rows.length, 3);
      assert.ok(rows.every((r) => r.device_hash !== first.device && r.device_hash.length === 43), 'only hashes are stored');
    });

    it('a made-up or another user\'s device cookie is a new browser for this user, and the cookie opens nothing', async () => {
      const a = await makeUser(tg.gw, 'walt');
      await makeUser(tg.gw, 'xena');
      const aDevice = (await signIn('walt', CHROME)).device!;
      const b = await signIn('xena', CHROME);
      const bUser = b.res.body.user.id as string;
      // Xena signs in on Walt's browser: new for her.
      const borrowed = await signIn('xena', CHROME, aDevice);
      assert.equal(borrowed.device, aDevice);
      assert.equal((await newDeviceEvents(bUser)).length, 1);
      assert.equal((await newDeviceEvents(a.id)).length, 0);
      // Garbage is replaced by a fresh token, and reported as new.
      const forged = await signIn('xena', CHROME, 'not-a-device-token');
      assert.ok(forged.device !== undefined && forged.device !== 'not-a-device-token');
      assert.equal((await newDeviceEvents(bUser)).length, 2);
      // The device cookie alone is no session.
      assert.equal((await tg.http().get('/v1/me').set('Cookie', `stepgate_device=${aDevice}`)).status, 401);
    });

    it('two concurrent sign-ins carrying one unknown device cookie report it once', async () => {
      const u = await makeUser(tg.gw, 'yuri');
      await signIn('yuri', CHROME);
      const token = 'A'.repeat(43);
      const results = await Promise.all([1, 2, 3].map(() => tg.http().post('/v1/login').set('User-Agent', IPHONE).set('Cookie', `stepgate_device=${token}`).send({ username: 'yuri', password: PASSWORD })));
      assert.deepEqual(results.map((r) => r.status), [200, 200, 200]);
      assert.equal((await newDeviceEvents(u.id)).length, 1);
    });

    it('a browser unseen for 400 days is forgotten; the production cookie has the __Host- prefix', async () => {
      const u = await makeUser(tg.gw, 'zora');
      await signIn('zora', CHROME);
      tg.clock.advance(401 * 86_400);
      await runMaintenance(tg.gw);
      assert.equal((await tg.gw.store.db.selectFrom('known_devices').select('device_hash').where('user_id', '=', u.id).execute()).length, 0);
      assert.equal(deviceCookieName({ ...tg.config, mode: 'production' }), '__Host-stepgate_device');
    });
  });
}
