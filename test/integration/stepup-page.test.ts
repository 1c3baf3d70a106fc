import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';

const ACTION = 'payment_code.issue';
const CONTEXT = { amount: '88.00', currency: 'CNY', payee: 'shop<script>alert(1)</script>' };

function csrfOf(html: string): string {
  const m = /name="_stepup_csrf" value="([^"]+)"/.exec(html);
  assert.ok(m, 'step-up CSRF field on the page');
  return m[1]!;
}

describe('the step-up page at user_url', () => {
  let tg: TestGateway;
  let pay: Awaited<ReturnType<typeof makeClient>>;

  before(async () => {
    tg = await createTestGateway();
    await setPolicies(tg.gw, [{ id: 'pwd', action: ACTION, priority: 1, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' }]);
    await makeUser(tg.gw, 'carol');
    pay = await makeClient(tg.gw, 'pay', [ACTION], ['https://pay.example/return']);
  });
  after(async () => {
    await tg.close();
  });

  async function create(extra: Record<string, unknown> = {}) {
    const res = await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'carol', action: ACTION, context: CONTEXT, binding_message: 'Pay 88.00 CNY to <b>shop</b>', ...extra });
    assert.equal(res.status, 201, res.text);
    return res.body as { stepup_id: string; ticket: string; user_url: string };
  }

  async function open(userUrl: string, lang = 'en') {
    const browser = tg.agent();
    const path = new URL(userUrl).pathname + new URL(userUrl).search;
    const first = await browser.get(path).set('Accept-Language', lang);
    assert.equal(first.status, 303);
    assert.equal(first.headers.location, new URL(userUrl).pathname, 'the ticket leaves the URL');
    const cookie = (first.headers['set-cookie'] as unknown as string[]).join(';');
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /Path=\/stepup\/stp_/);
    const page = await browser.get(first.headers.location!).set('Accept-Language', lang);
    return { browser, page };
  }

  it('shows what is being approved (escaped) and completes with a password', async () => {
    const s = await create();
    const { browser, page } = await open(s.user_url);
    assert.equal(page.status, 200);
    assert.match(page.text, /Pay 88.00 CNY to &lt;b&gt;shop&lt;\/b&gt;/);
    assert.ok(!page.text.includes('<script>alert(1)</script>'));
    assert.match(page.text, /88.00 CNY/);
    assert.ok(!page.text.includes(s.ticket), 'the ticket is not in the page');
    const done = await browser.post(`/stepup/${s.stepup_id}/verify`).type('form').send({ _stepup_csrf: csrfOf(page.text), factor: 'password', password: PASSWORD });
    assert.equal(done.status, 303);
    assert.equal(done.headers.location, `/stepup/${s.stepup_id}`);
    const after = await browser.get(`/stepup/${s.stepup_id}`);
    assert.match(after.text, /Approved/);
    tg.clock.advance(3);
    const token = await tg.http().post(`/v1/stepup/${s.stepup_id}/token`).set('Authorization', pay.basic).send();
    assert.equal(token.status, 200);
  });

  it('returns to the registered redirect_uri with state after completion', async () => {
    const s = await create({ redirect_uri: 'https://pay.example/return', state: 'xyz 1' });
    const { browser, page } = await open(s.user_url);
    const done = await browser.post(`/stepup/${s.stepup_id}/verify`).type('form').send({ _stepup_csrf: csrfOf(page.text), factor: 'password', password: PASSWORD });
    assert.equal(done.status, 303);
    const target = new URL(done.headers.location!);
    assert.equal(target.origin + target.pathname, 'https://pay.example/return');
    assert.equal(target.searchParams.get('state'), 'xyz 1');
    assert.equal(target.searchParams.get('stepup_id'), s.stepup_id);
  });

  it('a wrong password shows a generic error and the remaining attempts', async () => {
    const s = await create();
    const { browser, page } = await open(s.user_url);
    const wrong = await browser.post(`/stepup/${s.stepup_id}/verify`).type('form').send({ _stepup_csrf: csrfOf(page.text), factor: 'password', password: 'nope nope nope' });
    assert.equal(wrong.status, 401);
    assert.match(wrong.text, /That did not work/);
    assert.match(wrong.text, /4 attempts left/);
  });

  it('refuses a form without the step-up CSRF token, and a browser without the ticket cookie', async () => {
    const s = await create();
    const { browser } = await open(s.user_url);
    const forged = await browser.post(`/stepup/${s.stepup_id}/verify`).type('form').send({ factor: 'password', password: PASSWORD });
    assert.equal(forged.status, 403);
    const stranger = await tg.http().post(`/stepup/${s.stepup_id}/verify`).type('form').send({ factor: 'password', password: PASSWORD });
    assert.equal(stranger.status, 401);
    const row = await tg.gw.store.db.selectFrom('stepups').select(['status', 'attempts']).where('id', '=', s.stepup_id).executeTakeFirstOrThrow();
    assert.deepEqual({ ...row }, { status: 'pending', attempts: 0 });
    const bad = await tg.agent().get(`/stepup/${s.stepup_id}?ticket=${'A'.repeat(43)}`);
    assert.equal(bad.status, 303);
  });

  it('the user can refuse a request they did not start; the client hears access_denied', async () => {
    const s = await create();
    const { browser, page } = await open(s.user_url);
    await browser.post(`/stepup/${s.stepup_id}/deny`).type('form').send({ _stepup_csrf: csrfOf(page.text) }).expect(303);
    tg.clock.advance(3);
    const token = await tg.http().post(`/v1/stepup/${s.stepup_id}/token`).set('Authorization', pay.basic).send();
    assert.equal(token.body.code, 'access_denied');
  });

  it('refusing on a stale page after the step-up was completed (from the app) does not tell the client access_denied', async () => {
    const s = await create({ redirect_uri: 'https://pay.example/return' });
    const { browser, page } = await open(s.user_url);
    await tg.http().post(`/v1/stepup/${s.stepup_id}/verify`).set('Authorization', `Ticket ${s.ticket}`).send({ factor: 'password', password: PASSWORD }).expect(200);
    const refused = await browser.post(`/stepup/${s.stepup_id}/deny`).type('form').send({ _stepup_csrf: csrfOf(page.text) });
    assert.equal(refused.status, 409);
    assert.equal(refused.headers.location, undefined);
    const events = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'stepup.denied').execute();
    assert.ok(!events.some((e) => e.data.includes(s.stepup_id)));
    tg.clock.advance(3);
    const token = await tg.http().post(`/v1/stepup/${s.stepup_id}/token`).set('Authorization', pay.basic).send();
    assert.equal(token.status, 200, token.text);
  });

  it('speaks Chinese when the browser asks for it', async () => {
    const s = await create();
    const { page } = await open(s.user_url, 'zh-CN,zh;q=0.9');
    assert.match(page.text, /确认此请求/);
    assert.match(page.text, /lang="zh-CN"/);
  });
});
