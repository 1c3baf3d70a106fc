import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { signIn, type SignedIn } from '../helpers/session.ts';
import { addPhone, captureSms, codeInText, type SmsCapture } from '../helpers/sms.ts';
import { makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/** Enrolling a phone (ownership proven by a code), through the JSON API and the pages; the step-up page with SMS. */

const BIG = { hour: 10_000, day: 10_000 };
const ROOMY_CAPS = { perNumber: BIG, perUser: BIG, perCountryCode: BIG, global: BIG };
const wrong = (code: string) => (code === '000000' ? '000001' : '000000');

for (const dialect of testDialects()) {
  describe(`phone enrolment for SMS codes (${dialect})`, () => {
    let tg: TestGateway;
    let sms: SmsCapture;

    before(async () => {
      tg = await createTestGateway({ dialect, config: { sms: { caps: ROOMY_CAPS } } });
      sms = captureSms(tg.gw);
    });
    after(async () => {
      await tg.close();
    });

    let n = 0;
    async function user(): Promise<SignedIn> {
      n += 1;
      await makeUser(tg.gw, `user${n}`);
      return signIn(tg, `user${n}`, PASSWORD);
    }
    const start = (s: SignedIn, body: Record<string, unknown>, lang = 'en') =>
      tg.http().post('/v1/me/factors/sms_otp').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).set('Accept-Language', lang).send(body);
    const confirm = (s: SignedIn, id: string, code: string) => tg.http().post(`/v1/me/factors/sms_otp/${id}/confirm`).set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ code });
    const resend = (s: SignedIn, id: string) => tg.http().post(`/v1/me/factors/sms_otp/${id}/resend`).set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send();
    const listed = async (s: SignedIn) => (await tg.http().get('/v1/me/factors').set('Cookie', s.cookie)).body.factors as { id: string; type: string; details: Record<string, unknown>; label: string }[];

    it('the phone becomes a factor only after the code sent to it is typed back', async () => {
      const s = await user();
      const started = await start(s, { phone: '138 0013 8000' }, 'zh-CN');
      assert.equal(started.status, 201, started.text);
      assert.match(started.body.factor_id, /^fac_/);
      assert.deepEqual({ ...started.body, factor_id: 'x' }, { factor_id: 'x', destination: '+86 138****8000', expires_in: 300, resend_after: 60 });
      const message = sms.last();
      assert.equal(message.to, '+8613800138000');
      assert.equal(message.purpose, 'enrolment');
      assert.match(message.text, /^【Stepgate】验证码 \d{6}，用于绑定此手机号，5分钟内有效。/);
      assert.deepEqual((await listed(s)).map((f) => f.type), ['password'], 'pending phones are not factors');
      const code = sms.lastCode();
      const bad = await confirm(s, started.body.factor_id, wrong(code));
      assert.equal(bad.status, 401);
      assert.equal(bad.body.code, 'factor_invalid');
      const ok = await confirm(s, started.body.factor_id, code);
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.body.type, 'sms_otp');
      assert.equal(ok.body.status, 'active');
      assert.deepEqual(ok.body.details, { phoneMasked: '+86 138****8000', country: 'CN' });
      assert.equal(ok.body.label, '+86 138****8000');
      assert.deepEqual((await listed(s)).map((f) => f.type).sort(), ['password', 'sms_otp']);
      // The code is used up; the enrolment is over.
      assert.equal((await confirm(s, started.body.factor_id, code)).status, 404);
      const types = (await tg.gw.store.db.selectFrom('audit_log').select('type').where('subject', '=', s.userId).execute()).map((r) => r.type);
      assert.ok(types.includes('factor.enrolment_started') && types.includes('factor.enrolment_failed') && types.includes('factor.enrolled') && types.includes('sms.sent'));
      // Enrolling the same number again is a conflict; a second number is fine.
      const dup = await start(s, { phone: '+86 138 0013 8000' });
      assert.equal(dup.status, 409);
      assert.equal(dup.body.invalid_params[0].pointer, '/phone');
      assert.equal((await start(s, { phone: '+8613900139000', label: 'Work' })).status, 201);
    });

    it('bad input is a 400 naming /phone and sends nothing: not a number, a landline, a region not allowed', async () => {
      const s = await user();
      const before = sms.sent.length;
      for (const [phone, code] of [
        ['12345', 'phone_invalid'],
        ['+86 10 1234 5678', 'phone_invalid'],
        ['+1 900 555 0100', 'phone_invalid'],
        ['call me', 'phone_invalid'],
        ['+852 9123 4567', 'sms_region_not_allowed'],
      ] as const) {
        const res = await start(s, { phone });
        assert.equal(res.status, 400, phone);
        assert.equal(res.body.code, code, phone);
        assert.equal(res.body.invalid_params[0].pointer, '/phone');
      }
      const unknown = await start(s, { phone: '+8613800138000', verified: true });
      assert.equal(unknown.status, 400);
      assert.equal(unknown.body.invalid_params[0].pointer, '/verified');
      assert.equal(sms.sent.length, before);
      const pending = await tg.gw.store.db.selectFrom('factors').select('id').where('user_id', '=', s.userId).where('type', '=', 'sms_otp').execute();
      assert.deepEqual(pending, []);
    });

    it('needs a session, the CSRF header and a fresh sign-in', async () => {
      const s = await user();
      assert.equal((await tg.http().post('/v1/me/factors/sms_otp').send({ phone: '+8613800138000' })).status, 401);
      const noCsrf = await tg.http().post('/v1/me/factors/sms_otp').set('Cookie', s.cookie).send({ phone: '+8613800138000' });
      assert.equal(noCsrf.status, 403);
      tg.clock.advance(tg.config.session.freshSeconds + 1);
      const stale = await start(s, { phone: '+8613800138000' });
      assert.equal(stale.status, 401);
      assert.equal(stale.body.code, 'fresh_login_required');
    });

    it('resend: cooldown, the old code dies, attempts are kept (the 6th is refused even with the new code); expiry', async () => {
      const s = await user();
      const started = await start(s, { phone: '+8613700137000' });
      const id = started.body.factor_id as string;
      const first = sms.lastCode();
      for (let i = 0; i < 3; i++) assert.equal((await confirm(s, id, wrong(first))).status, 401);
      const early = await resend(s, id);
      assert.equal(early.status, 429);
      assert.equal(early.body.code, 'challenge_cooldown');
      assert.ok(Number(early.headers['retry-after']) <= 60);
      tg.clock.advance(61);
      const again = await resend(s, id);
      assert.equal(again.status, 200, again.text);
      const second = sms.lastCode();
      assert.equal((await confirm(s, id, first === second ? wrong(second) : first)).status, 401); // 4
      assert.equal((await confirm(s, id, wrong(second))).status, 401); // 5
      const sixth = await confirm(s, id, second);
      assert.equal(sixth.status, 429);
      assert.equal(sixth.body.code, 'challenge_attempts_exhausted');
      assert.equal((await listed(s)).some((f) => f.type === 'sms_otp'), false);

      // A fresh enrolment starts over; its code expires after 5 minutes.
      const fresh = await signIn(tg, `user${n}`, PASSWORD);
      const restarted = await start(fresh, { phone: '+8613700137000' });
      assert.equal(restarted.status, 201);
      const code = sms.lastCode();
      tg.clock.advance(301);
      const expired = await confirm(fresh, restarted.body.factor_id, code);
      assert.equal(expired.status, 401, 'the sign-in is no longer fresh either');
      const fresher = await signIn(tg, `user${n}`, PASSWORD);
      const late = await confirm(fresher, restarted.body.factor_id, code);
      assert.equal(late.status, 400);
      assert.equal(late.body.code, 'challenge_required');
    });

    it('a failed first send is a 503 with Retry-After and leaves no pending phone', async () => {
      const s = await user();
      sms.set(async () => {
        throw new Error('provider exploded');
      });
      try {
        const res = await start(s, { phone: '+8613600136000' });
        assert.equal(res.status, 503);
        assert.equal(res.body.code, 'sms_unavailable');
        assert.ok(Number(res.headers['retry-after']) > 0);
      } finally {
        sms.set(undefined);
      }
      const rows = await tg.gw.store.db.selectFrom('factors').select('id').where('user_id', '=', s.userId).where('type', '=', 'sms_otp').execute();
      assert.deepEqual(rows, []);
    });

    it('two concurrent confirmations with the right code enrol the phone once', async () => {
      const s = await user();
      const started = await start(s, { phone: '+8613500135000' });
      const code = sms.lastCode();
      const results = await Promise.all(Array.from({ length: 5 }, () => confirm(s, started.body.factor_id, code)));
      assert.equal(results.filter((r) => r.status === 200).length, 1, results.map((r) => r.status).join(','));
      const enrolled = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'factor.enrolled').where('subject', '=', s.userId).execute();
      assert.equal(enrolled.length, 1);
    });

    it('pages: my security → add a phone → confirm page → enrolled', async () => {
      const s = await user();
      const browser = tg.agent().set('Cookie', s.cookie);
      const page = await browser.get('/security');
      assert.equal(page.status, 200);
      assert.match(page.text, /action="\/security\/sms_otp\/enrol"/);
      const invalid = await browser.post('/security/sms_otp/enrol').type('form').send({ _csrf: s.csrf, phone: '+86 10 1234 5678', label: '' });
      assert.equal(invalid.status, 400);
      assert.match(invalid.text, /Enter a valid mobile number/);
      assert.match(invalid.text, /value="\+86 10 1234 5678"/);
      const posted = await browser.post('/security/sms_otp/enrol').type('form').send({ _csrf: s.csrf, phone: '+86 135 0000 0001', label: 'My phone' });
      assert.equal(posted.status, 303, posted.text);
      assert.match(posted.headers.location ?? '', /^\/security\/sms_otp\/fac_/);
      const confirmPage = await browser.get(posted.headers.location!);
      assert.equal(confirmPage.status, 200);
      assert.match(confirmPage.text, /\+86 135\*\*\*\*0001/);
      assert.match(confirmPage.text, /new code in 60 s/);
      const badCode = await browser.post(`${posted.headers.location}/confirm`).type('form').send({ _csrf: s.csrf, code: wrong(sms.lastCode()) });
      assert.equal(badCode.status, 401);
      assert.match(badCode.text, /That code is not correct/);
      const done = await browser.post(`${posted.headers.location}/confirm`).type('form').send({ _csrf: s.csrf, code: sms.lastCode() });
      assert.equal(done.status, 303);
      assert.equal(done.headers.location, '/security?notice=enrolled');
      const after = await browser.get(done.headers.location!);
      assert.match(after.text, /<li data-factor-type="sms_otp"[^>]*>\s*<strong>SMS code<\/strong> · My phone\s*<span class="hint">\+86 135\*\*\*\*0001<\/span>/);
      assert.match(after.text, /The factor was added/);
    });
  });

  describe(`the step-up page with SMS (${dialect})`, () => {
    let tg: TestGateway;
    let sms: SmsCapture;
    let pay: Awaited<ReturnType<typeof makeClient>>;

    before(async () => {
      tg = await createTestGateway({ dialect, config: { sms: { caps: ROOMY_CAPS } } });
      sms = captureSms(tg.gw);
      await setPolicies(tg.gw, [{ id: 'sms', action: 'payment_code.issue', priority: 1, require: { anyOf: [['sms_otp']] }, acr: 'urn:stepgate:aal2' }]);
      await addPhone(tg.gw, (await makeUser(tg.gw, 'frank')).id, '+8613800138000');
      pay = await makeClient(tg.gw, 'pay', ['payment_code.issue']);
    });
    after(async () => {
      await tg.close();
    });

    it('send code → enter code → approved; an early resend says how long to wait', async () => {
      const created = await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'frank', action: 'payment_code.issue', context: { amount: '66.00', currency: 'CNY', payee: 'cafe' } });
      assert.equal(created.status, 201);
      const userUrl = new URL(created.body.user_url);
      const browser = tg.agent();
      const first = await browser.get(userUrl.pathname + userUrl.search);
      assert.equal(first.status, 303);
      const page = await browser.get(userUrl.pathname);
      assert.match(page.text, /Text a code to \+86 138\*\*\*\*8000/);
      const csrf = /name="_stepup_csrf" value="([^"]+)"/.exec(page.text)?.[1] ?? '';
      const factorId = /name="factorId" value="([^"]+)"/.exec(page.text)?.[1] ?? '';
      const sent = await browser.post(`${userUrl.pathname}/challenge`).type('form').send({ _stepup_csrf: csrf, factor: 'sms_otp', factorId });
      assert.equal(sent.status, 303, sent.text);
      assert.match(sms.last().text, /a payment of 66\.00 CNY to cafe/);
      const withCode = await browser.get(userUrl.pathname);
      assert.match(withCode.text, /id="f-sms_otp"/);
      assert.match(withCode.text, /We sent a code to \+86 138\*\*\*\*8000/);
      assert.match(withCode.text, /new code in 60 s/);
      const early = await browser.post(`${userUrl.pathname}/challenge`).type('form').send({ _stepup_csrf: csrf, factor: 'sms_otp', factorId });
      assert.equal(early.status, 429);
      assert.match(early.text, /Please wait \d+ s/);
      const wrongCode = await browser.post(`${userUrl.pathname}/verify`).type('form').send({ _stepup_csrf: csrf, factor: 'sms_otp', code: wrong(sms.lastCode()) });
      assert.equal(wrongCode.status, 401);
      const done = await browser.post(`${userUrl.pathname}/verify`).type('form').send({ _stepup_csrf: csrf, factor: 'sms_otp', code: sms.lastCode() });
      assert.equal(done.status, 303);
      assert.match((await browser.get(userUrl.pathname)).text, /Approved/);
    });
  });
}

describe('the development outbox', () => {
  it('/dev/outbox shows what the outbox provider stored; it does not exist with a real provider', async () => {
    const tg = await createTestGateway();
    const other = await createTestGateway({ config: { sms: { provider: 'webhook', webhook: { url: 'http://127.0.0.1:9/none', secret: 's'.repeat(40) } } } });
    try {
      await makeUser(tg.gw, 'gina');
      const s = await signIn(tg, 'gina', PASSWORD);
      const started = await tg.http().post('/v1/me/factors/sms_otp').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ phone: '+8613800138000' });
      assert.equal(started.status, 201, started.text);
      const outbox = await tg.http().get('/dev/outbox');
      assert.equal(outbox.status, 200);
      assert.match(outbox.text, /\+8613800138000/);
      const code = codeInText(/<p class="sms-text">([^<]+)<\/p>/.exec(outbox.text)?.[1] ?? '');
      const ok = await tg.http().post(`/v1/me/factors/sms_otp/${started.body.factor_id}/confirm`).set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ code });
      assert.equal(ok.status, 200);
      assert.equal((await other.http().get('/dev/outbox')).status, 404);
    } finally {
      await tg.close();
      await other.close();
    }
  });
});
