import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { replaceSmsSender, smsSenderOf } from '../../src/flows/deliver-sms.ts';
import { importTokenFile } from '../../src/flows/hardware-token-import.ts';
import { createUser } from '../../src/flows/users.ts';
import { appsOf, createTestGateway, type SecondGateway, secondGatewayOnPostgres, type TestGateway } from '../helpers/gateway.ts';
import { needOathtool, oathHotp, randomSeedHex } from '../helpers/hardware-tokens.ts';
import { signIn } from '../helpers/session.ts';
import { addPhone, captureSms, codeInText, type SmsCapture } from '../helpers/sms.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * factors.maxPerType holds under concurrency: an enrolment start counts the user's active
 * factors of the type and inserts one more, with the user row locked (PostgreSQL) or inside
 * SQLite's write lock, so parallel starts — in one process or in two gateway processes on
 * one PostgreSQL — never add more than the limit. A helpdesk assignment of a hardware
 * token is a start and its activation in one transaction: the sharpest case.
 */

const PASSWORD = 'a long enough passphrase 7';
const MAX_PER_TYPE = 3;
const PARALLEL = 12;

for (const dialect of testDialects()) {
  describe(`factors.maxPerType under concurrency (${dialect})`, () => {
    let t: TestGateway;
    /** PostgreSQL: a second gateway process on the same database. */
    let second: SecondGateway | undefined;
    let cookie: string[];
    let csrf: string;
    let sms: SmsCapture;

    before(async () => {
      const big = { hour: 10_000, day: 10_000 };
      t = await createTestGateway({ dialect, config: { factors: { maxPerType: MAX_PER_TYPE }, sms: { caps: { perNumber: big, perUser: big, perCountryCode: big, global: big } } } });
      sms = captureSms(t.gw);
      await createUser(t.gw, { username: 'desk', password: PASSWORD, roles: ['helpdesk'] }, { actor: 'test' });
      const res = await t.http().post('/v1/login').send({ username: 'desk', password: PASSWORD }).expect(200);
      cookie = res.headers['set-cookie'] as unknown as string[];
      csrf = res.body.csrf_token as string;
      second = await secondGatewayOnPostgres(t);
      // The second process delivers into the same capture: an enrolment started there sends its code there.
      if (second !== undefined) replaceSmsSender(second.gw, smsSenderOf(t.gw));
    });
    after(async () => {
      await second?.close();
      await t.close();
    });

    it(`${PARALLEL} parallel token assignments to one user: exactly ${MAX_PER_TYPE} succeed, the rest get the 409 limit problem`, async (tc) => {
      if (needOathtool(tc)) return;
      const user = await createUser(t.gw, { username: 'many-tokens', password: PASSWORD }, { actor: 'test' });
      const seeds = Array.from({ length: PARALLEL }, () => randomSeedHex());
      const csv = seeds.map((seed, i) => `LIM-${i},${seed},hotp,6,0`).join('\n');
      await importTokenFile(t.gw, { data: Buffer.from(csv), fileName: 'limit.csv', source: 'cli' }, { actor: 'test' });
      const apps = appsOf(t, second);
      const results = await Promise.all(
        seeds.map((seed, i) =>
          supertest(apps[i % apps.length] as (typeof apps)[number])
            .post(`/v1/admin/hardware-tokens/LIM-${i}/assign`)
            .set('Cookie', cookie)
            .set('X-CSRF-Token', csrf)
            .send({ user_id: user.id, code: oathHotp(seed, 0), reason: 'issued at the branch' }),
        ),
      );
      const statuses = results.map((r) => r.status);
      assert.equal(statuses.filter((s) => s === 200).length, MAX_PER_TYPE, statuses.join());
      for (const r of results.filter((x) => x.status !== 200)) {
        assert.equal(r.status, 409, JSON.stringify(r.body));
        assert.match(String(r.headers['content-type']), /^application\/problem\+json/);
        assert.equal(r.body.code, 'conflict');
        assert.deepEqual(r.body.invalid_params, [{ pointer: '/type', reason: 'limit reached' }]);
      }
      const active = await t.gw.store.db.selectFrom('factors').select('id').where('user_id', '=', user.id).where('type', '=', 'hardware_otp').where('status', '=', 'active').execute();
      assert.equal(active.length, MAX_PER_TYPE);
      // The refused assignments changed nothing: their tokens are still in stock.
      const assigned = await t.gw.store.db.selectFrom('hardware_tokens').select('serial').where('user_id', '=', user.id).where('state', '=', 'assigned').execute();
      assert.equal(assigned.length, MAX_PER_TYPE);
      const enrolled = await t.gw.store.db.selectFrom('audit_log').select('seq').where('type', '=', 'factor.enrolled').where('subject', '=', user.id).execute();
      assert.equal(enrolled.length, MAX_PER_TYPE);
    });

    /**
     * A user holding `holding` phones starts enrolments of `numbers` in parallel (PostgreSQL:
     * alternating between two gateway processes). Returns the pending enrolments left.
     */
    async function parallelPhoneStarts(username: string, holding: string[], numbers: string[]) {
      const user = await createUser(t.gw, { username, password: PASSWORD }, { actor: 'test' });
      // Signed in before the phones it holds are added: enrolling needs no second-factor proof then.
      const s = await signIn(t, username, PASSWORD);
      for (const phone of holding) await addPhone(t.gw, user.id, phone);
      const apps = appsOf(t, second);
      const started = await Promise.all(
        numbers.map((phone, i) => supertest(apps[i % apps.length] as (typeof apps)[number]).post('/v1/me/factors/sms_otp').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ phone })),
      );
      for (const r of started) assert.equal(r.status, 201, r.text);
      const pending = await t.gw.store.db.selectFrom('factors').select(['id', 'params']).where('user_id', '=', user.id).where('type', '=', 'sms_otp').where('status', '=', 'pending').execute();
      const active = async () => (await t.gw.store.db.selectFrom('factors').select('id').where('user_id', '=', user.id).where('type', '=', 'sms_otp').where('status', '=', 'active').execute()).length;
      return { s, pending: pending.map((f) => ({ id: f.id, phone: (JSON.parse(f.params) as { phone: string }).phone })), active };
    }

    it(`${PARALLEL} parallel phone enrolment starts, one phone under the limit: one enrolment is left to confirm, then the next start is the 409`, async () => {
      const holding = Array.from({ length: MAX_PER_TYPE - 1 }, (_, i) => `+86138001${38000 + i}`);
      const numbers = Array.from({ length: PARALLEL }, (_, i) => `+86138001${38100 + i}`);
      const { s, pending, active } = await parallelPhoneStarts('many-phones', holding, numbers);
      // Each start replaces the one before it (one at a time per user): one is left, so at most
      // one phone can be added — two left would both confirm and pass the limit.
      assert.equal(pending.length, 1, JSON.stringify(pending));
      const [left] = pending;
      assert.ok(left);
      const message = sms.sent.filter((m) => m.to === left.phone).at(-1);
      assert.ok(message);
      const ok = await t.http().post(`/v1/me/factors/sms_otp/${left.id}/confirm`).set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ code: codeInText(message.text) });
      assert.equal(ok.status, 200, ok.text);
      assert.equal(await active(), MAX_PER_TYPE);
      const more = await t.http().post('/v1/me/factors/sms_otp').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ phone: '+8613900139000' });
      assert.equal(more.status, 409, more.text);
      assert.equal(more.body.code, 'conflict');
      assert.deepEqual(more.body.invalid_params, [{ pointer: '/type', reason: 'limit reached' }]);
    });

    it(`${PARALLEL} parallel enrolment starts of one number: one enrolment is left, so the number is enrolled at most once`, async () => {
      const { pending } = await parallelPhoneStarts('one-number', [], Array(PARALLEL).fill('+8613800138555'));
      assert.equal(pending.length, 1, JSON.stringify(pending));
    });
  });
}
