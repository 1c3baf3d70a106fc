import assert from 'node:assert/strict';
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { after, before, beforeEach, describe, it } from 'node:test';
import { FixedClock } from '../../src/clock.ts';
import { createAliyunSender } from '../../src/sms/aliyun-sender.ts';
import { SmsSendError, type SmsMessage, type SmsSender } from '../../src/sms/sms-sender.ts';
import { createTwilioSender } from '../../src/sms/twilio-sender.ts';
import { createWebhookSender } from '../../src/sms/webhook-sender.ts';
import { type Captured, type FakeHttpServer, fakeHttpServer } from '../helpers/fake-http.ts';

/**
 * Each real provider against a local fake server that checks the exact request: method,
 * path, content type, fields, and the authentication (recomputed here independently of
 * src/sms/). Failures: HTTP 500, a refusal in the body, a server that never answers
 * (timeout), nothing listening.
 */

const clock = new FixedClock(Date.UTC(2026, 4, 17, 8, 30, 15, 123));

const MESSAGE: SmsMessage = {
  id: 'sms_test-message-1',
  to: '+8613800138000',
  locale: 'zh-CN',
  purpose: 'stepup',
  text: '【Stepgate】验证码 042917，用于确认向 shop-42 支付 120.00 CNY，5分钟内有效。请勿告诉任何人，我们不会向您索取。',
  variables: { code: '042917', summary: '向 shop-42 支付 120.00 CNY', minutes: '5' },
  validitySeconds: 300,
};

const SECRETS = { twilio: 'twilio-auth-token-0123456789abcdef', aliyun: 'aliyun-access-key-secret-XYZ', webhook: 'webhook-shared-secret-0123456789abcdef-0123' };

async function sendError(sender: SmsSender, message = MESSAGE): Promise<SmsSendError> {
  try {
    await sender.send(message);
  } catch (err) {
    assert.ok(err instanceof SmsSendError, String(err));
    // A failure never carries a credential, the code or the text.
    for (const secret of [...Object.values(SECRETS), MESSAGE.variables.code, 'shop-42']) assert.ok(!err.message.includes(secret), err.message);
    return err;
  }
  assert.fail('expected the send to fail');
}

function header(req: Captured, name: string): string {
  const v = req.headers[name];
  assert.equal(typeof v, 'string', `header ${name}`);
  return v as string;
}

/** RFC 3986 as Aliyun wants it, written again here so the check does not reuse the code under test. */
function rfc3986(s: string): string {
  return [...Buffer.from(s, 'utf8')].map((b) => (/[A-Za-z0-9\-_.~]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`)).join('');
}

/** The server side of ACS3-HMAC-SHA256: recompute the signature from what arrived. */
function verifyAcs3(req: Captured, accessKeyId: string, secret: string): void {
  const auth = header(req, 'authorization');
  const m = /^ACS3-HMAC-SHA256 Credential=([^,]+),SignedHeaders=([^,]+),Signature=([0-9a-f]{64})$/.exec(auth);
  assert.ok(m, auth);
  assert.equal(m[1], accessKeyId);
  const signed = m[2]!.split(';');
  assert.deepEqual(signed, [...signed].sort(), 'signed headers sorted');
  for (const name of Object.keys(req.headers)) if (name.startsWith('x-acs-')) assert.ok(signed.includes(name), `${name} is signed`);
  assert.ok(signed.includes('host'));
  const [path = '', rawQuery = ''] = req.url.split('?');
  const pairs = rawQuery.split('&').filter(Boolean).map((p) => p.split('=').map((x) => decodeURIComponent(x)) as [string, string]);
  const canonicalQuery = pairs.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, v]) => `${rfc3986(k)}=${rfc3986(v)}`).join('&');
  const canonicalHeaders = signed.map((n) => `${n}:${header(req, n).trim()}\n`).join('');
  const payloadHash = createHash('sha256').update(req.body).digest('hex');
  assert.equal(header(req, 'x-acs-content-sha256'), payloadHash);
  const canonical = [req.method, path, canonicalQuery, canonicalHeaders, signed.join(';'), payloadHash].join('\n');
  const expected = createHmac('sha256', secret).update(`ACS3-HMAC-SHA256\n${createHash('sha256').update(canonical).digest('hex')}`).digest();
  assert.ok(timingSafeEqual(expected, Buffer.from(m[3]!, 'hex')), 'signature verifies');
}

describe('SMS providers against fake servers', () => {
  let server: FakeHttpServer;
  before(async () => {
    server = await fakeHttpServer(() => ({ status: 500 }));
  });
  after(async () => {
    await server.close();
  });
  beforeEach(() => {
    server.requests.length = 0;
  });

  describe('twilio', () => {
    const twilio = () => createTwilioSender({ accountSid: 'AC0123456789abcdef0123456789abcdef', authToken: SECRETS.twilio, from: '+15005550006', messagingServiceSid: '', baseUrl: server.url, timeoutMs: 2000 });

    it('POSTs the Messages resource form-encoded with basic auth, and returns the message SID', async () => {
      server.handler = () => ({ status: 201, body: JSON.stringify({ sid: 'SM0123456789abcdef0123456789abcdef', status: 'queued' }) });
      const result = await twilio().send(MESSAGE);
      assert.equal(result.providerMessageId, 'SM0123456789abcdef0123456789abcdef');
      const [req] = server.requests;
      assert.ok(req);
      assert.equal(req.method, 'POST');
      assert.equal(req.url, '/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json');
      assert.equal(header(req, 'content-type'), 'application/x-www-form-urlencoded');
      assert.equal(header(req, 'authorization'), `Basic ${Buffer.from(`AC0123456789abcdef0123456789abcdef:${SECRETS.twilio}`).toString('base64')}`);
      const form = new URLSearchParams(req.body);
      assert.deepEqual([...form.keys()].sort(), ['Body', 'From', 'To', 'ValidityPeriod']);
      assert.equal(form.get('To'), '+8613800138000');
      assert.equal(form.get('From'), '+15005550006');
      assert.equal(form.get('Body'), MESSAGE.text);
      assert.equal(form.get('ValidityPeriod'), '300');
    });

    it('uses MessagingServiceSid instead of From when configured', async () => {
      server.handler = () => ({ status: 201, body: JSON.stringify({ sid: 'SM1', status: 'accepted' }) });
      await createTwilioSender({ accountSid: 'AC1', authToken: SECRETS.twilio, from: '', messagingServiceSid: 'MG0123', baseUrl: `${server.url}/`, timeoutMs: 2000 }).send(MESSAGE);
      const form = new URLSearchParams(server.requests[0]!.body);
      assert.equal(form.get('MessagingServiceSid'), 'MG0123');
      assert.equal(form.get('From'), null);
      assert.equal(server.requests[0]!.url, '/2010-04-01/Accounts/AC1/Messages.json');
    });

    it('an error answer is a failure with Twilio\'s error code; a 5xx is an HTTP failure', async () => {
      server.handler = () => ({ status: 400, body: JSON.stringify({ code: 21211, message: "The 'To' number +86… is not a valid phone number.", status: 400 }) });
      const rejected = await sendError(twilio());
      assert.equal(rejected.kind, 'rejected');
      assert.equal(rejected.providerCode, '21211');
      server.handler = () => ({ status: 500, body: 'oops' });
      const failed = await sendError(twilio());
      assert.equal(failed.kind, 'http');
      assert.equal(failed.httpStatus, 500);
    });
  });

  describe('aliyun', () => {
    const aliyun = (timeoutMs = 2000) =>
      createAliyunSender({
        accessKeyId: 'LTAI5tTestAccessKeyId',
        accessKeySecret: SECRETS.aliyun,
        endpoint: server.url,
        signName: '某某支付',
        templateCodes: { en: 'SMS_100000001', 'zh-CN': 'SMS_100000002' },
        templateParams: ['code', 'summary', 'minutes'],
        timeoutMs,
        clock,
      });

    it('sends SendSms (2017-05-25) with the query parameters and a valid ACS3-HMAC-SHA256 signature', async () => {
      server.handler = () => ({ status: 200, body: JSON.stringify({ Code: 'OK', Message: 'OK', BizId: '900619746936498440^0', RequestId: 'F655A8D5-B967-440B-8683-DAD6FF8DE990' }) });
      const result = await aliyun().send(MESSAGE);
      assert.equal(result.providerMessageId, '900619746936498440^0');
      const [req] = server.requests;
      assert.ok(req);
      assert.equal(req.method, 'POST');
      assert.equal(req.body, '');
      assert.equal(header(req, 'x-acs-action'), 'SendSms');
      assert.equal(header(req, 'x-acs-version'), '2017-05-25');
      assert.equal(header(req, 'x-acs-date'), '2026-05-17T08:30:15Z');
      assert.match(header(req, 'x-acs-signature-nonce'), /^[0-9a-f]{32}$/);
      assert.equal(header(req, 'host'), new URL(server.url).host);
      const query = new URL(req.url, server.url).searchParams;
      assert.deepEqual([...query.keys()].sort(), ['OutId', 'PhoneNumbers', 'SignName', 'TemplateCode', 'TemplateParam']);
      assert.equal(query.get('PhoneNumbers'), '8613800138000');
      assert.equal(query.get('SignName'), '某某支付');
      assert.equal(query.get('TemplateCode'), 'SMS_100000002');
      assert.equal(query.get('OutId'), MESSAGE.id);
      assert.deepEqual(JSON.parse(query.get('TemplateParam') ?? ''), { code: '042917', summary: '向 shop-42 支付 120.00 CNY', minutes: '5' });
      // Spaces are %20 (RFC 3986), never "+".
      assert.ok(!req.url.includes('+') && req.url.includes('%20'));
      verifyAcs3(req, 'LTAI5tTestAccessKeyId', SECRETS.aliyun);
      // A tampered request would not verify.
      assert.throws(() => verifyAcs3({ ...req, url: req.url.replace('SMS_100000002', 'SMS_100000003') }, 'LTAI5tTestAccessKeyId', SECRETS.aliyun));
      // Each request has its own nonce; English picks the English template; only listed variables are sent.
      await createAliyunSender({ accessKeyId: 'LTAI5tTestAccessKeyId', accessKeySecret: SECRETS.aliyun, endpoint: server.url, signName: 'S', templateCodes: { en: 'SMS_1', 'zh-CN': 'SMS_2' }, templateParams: ['code'], timeoutMs: 2000, clock }).send({ ...MESSAGE, locale: 'en' });
      const second = server.requests[1]!;
      assert.notEqual(header(second, 'x-acs-signature-nonce'), header(req, 'x-acs-signature-nonce'));
      const q2 = new URL(second.url, server.url).searchParams;
      assert.equal(q2.get('TemplateCode'), 'SMS_1');
      assert.deepEqual(JSON.parse(q2.get('TemplateParam') ?? ''), { code: '042917' });
      verifyAcs3(second, 'LTAI5tTestAccessKeyId', SECRETS.aliyun);
    });

    it('bounds template variables to Aliyun\'s 35 characters', async () => {
      server.handler = () => ({ status: 200, body: JSON.stringify({ Code: 'OK', BizId: 'b' }) });
      await aliyun().send({ ...MESSAGE, variables: { ...MESSAGE.variables, summary: 'x'.repeat(80) } });
      const vars = JSON.parse(new URL(server.requests[0]!.url, server.url).searchParams.get('TemplateParam') ?? '') as Record<string, string>;
      assert.equal([...(vars.summary ?? '')].length, 35);
    });

    it('a business refusal (HTTP 200, Code not OK) and an HTTP error are failures with Aliyun\'s code', async () => {
      server.handler = () => ({ status: 200, body: JSON.stringify({ Code: 'isv.BUSINESS_LIMIT_CONTROL', Message: '触发分钟级流控Permits:1', RequestId: 'r' }) });
      const refused = await sendError(aliyun());
      assert.equal(refused.kind, 'rejected');
      assert.equal(refused.providerCode, 'isv.BUSINESS_LIMIT_CONTROL');
      server.handler = () => ({ status: 400, body: JSON.stringify({ Code: 'SignatureDoesNotMatch', Message: 'Specified signature is not matched with our calculation.' }) });
      const http = await sendError(aliyun());
      assert.equal(http.kind, 'http');
      assert.equal(http.providerCode, 'SignatureDoesNotMatch');
      server.handler = () => ({ status: 200, body: '<html>proxy error</html>', contentType: 'text/html' });
      assert.equal((await sendError(aliyun())).kind, 'rejected');
    });

    it('a server that never answers is a timeout', async () => {
      server.handler = () => 'hang';
      const err = await sendError(aliyun(200));
      assert.equal(err.kind, 'timeout');
    });
  });

  describe('webhook', () => {
    const webhook = (timeoutMs = 2000, url = `${server.url}/sms/send`) => createWebhookSender({ url, secret: SECRETS.webhook, timeoutMs, clock });

    it('POSTs the message as JSON with X-Stepgate-Signature = t=<unix>,v1=HMAC-SHA256(secret, "<t>.<body>")', async () => {
      server.handler = () => ({ status: 202, body: JSON.stringify({ message_id: 'gw-77' }) });
      const result = await webhook().send(MESSAGE);
      assert.equal(result.providerMessageId, 'gw-77');
      const [req] = server.requests;
      assert.ok(req);
      assert.equal(req.method, 'POST');
      assert.equal(req.url, '/sms/send');
      assert.equal(header(req, 'content-type'), 'application/json');
      const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header(req, 'x-stepgate-signature'));
      assert.ok(m);
      assert.equal(Number(m[1]), Math.floor(clock.now().getTime() / 1000));
      const expected = createHmac('sha256', SECRETS.webhook).update(`${m[1]}.${req.body}`).digest();
      assert.ok(timingSafeEqual(expected, Buffer.from(m[2]!, 'hex')));
      assert.deepEqual(JSON.parse(req.body), {
        id: MESSAGE.id,
        to: '+8613800138000',
        text: MESSAGE.text,
        locale: 'zh-CN',
        purpose: 'stepup',
        variables: MESSAGE.variables,
        validity_seconds: 300,
        created_at: clock.now().toISOString(),
      });
    });

    it('a non-2xx answer, a redirect, no answer and no server are failures', async () => {
      server.handler = () => ({ status: 500 });
      assert.equal((await sendError(webhook())).kind, 'http');
      server.handler = () => ({ status: 422, body: JSON.stringify({ code: 'number_blocked' }) });
      const refused = await sendError(webhook());
      assert.equal(refused.kind, 'rejected');
      assert.equal(refused.providerCode, 'number_blocked');
      server.handler = () => ({ status: 302, body: '' });
      assert.equal((await sendError(webhook())).kind, 'rejected');
      server.handler = () => 'hang';
      assert.equal((await sendError(webhook(200))).kind, 'timeout');
      const closed = await fakeHttpServer(() => ({ status: 200 }));
      const deadUrl = closed.url;
      await closed.close();
      assert.equal((await sendError(webhook(2000, deadUrl))).kind, 'network');
    });
  });
});
