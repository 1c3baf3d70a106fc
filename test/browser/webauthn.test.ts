import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, describe, it, type TestContext } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import request from 'supertest';
import { createJwksCache, MemoryReplayStore, verifyStepUpToken } from '../../src/verifier/index.ts';
import { hasTool, needTool } from '../helpers/env.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { type LateServer, lateServer, launchChromium, SCREENSHOT_DIR, screenshot, VirtualAuthenticator } from '../helpers/browser.ts';
import { makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';

/**
 * WebAuthn through the real pages in a real browser: Debian's Chromium with a CDP virtual
 * authenticator (CTAP2, internal transport, resident keys, a fingerprint reader). One
 * browser for the file; every case gets a fresh context, a fresh authenticator and a fresh
 * user, and the authenticator's credentials are cleared afterwards.
 */

const ACTION = 'payment_code.issue';
const CONTEXT = { amount: '2400.00', currency: 'CNY', payee: 'Shanghai Coffee Co.', deviceId: 'dev-7' };

/** Runs in the page: a browser without WebAuthn autofill. */
function noConditionalUi(): void {
  const pkc = (globalThis as { PublicKeyCredential?: object }).PublicKeyCredential;
  if (pkc !== undefined) Object.defineProperty(pkc, 'isConditionalMediationAvailable', { value: async () => false });
}

interface PageDocument {
  getElementById(id: string): { dataset: Record<string, string | undefined> } | null;
}

describe('webauthn in the browser', () => {
  let browser: Browser | undefined;
  let web: LateServer;
  let tg: TestGateway;
  let pay: Awaited<ReturnType<typeof makeClient>>;
  let context: BrowserContext;
  let page: Page;
  let authenticator: VirtualAuthenticator;
  let n = 0;

  before(async () => {
    web = await lateServer();
    // The browser reaches the gateway at http://localhost:<port>: RP ID localhost, exact origin with the port.
    tg = await createTestGateway({ config: { http: { publicUrl: web.url }, webauthn: { timeoutSeconds: 30 } } });
    web.setHandler(tg.app);
    await setPolicies(tg.gw, [{ id: 'pay-fingerprint', action: ACTION, priority: 10, require: { anyOf: [['webauthn']] }, acr: 'urn:stepgate:aal2', tokenTtlSeconds: 120 }]);
    pay = await makeClient(tg.gw, 'payment-code service', [ACTION]);
    if (hasTool('chromium')) browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await web.close();
    await tg.close();
    console.log(`# screenshots: ${SCREENSHOT_DIR}`);
  });
  beforeEach(async (t) => {
    if (browser === undefined) return;
    context = await browser.newContext({ locale: 'en-US' });
    // The virtual authenticator answers a conditional (autofill) request at once, which would
    // sign the user in whenever /login is shown; only the case about autofill keeps it.
    if (!t.name.includes('[autofill]')) await context.addInitScript(noConditionalUi);
    page = await context.newPage();
    authenticator = await VirtualAuthenticator.add(context, page);
  });
  afterEach(async () => {
    if (browser === undefined) return;
    await authenticator.clear().catch(() => undefined);
    await context.close();
  });

  function needBrowser(t: TestContext): boolean {
    return needTool(t, 'chromium', 'chromium') || browser === undefined;
  }

  async function newUser(): Promise<{ id: string; username: string }> {
    n += 1;
    return makeUser(tg.gw, `user${n}`);
  }

  async function signInOnPage(username: string, next = '/security'): Promise<void> {
    await page.goto(`${web.url}/login?next=${encodeURIComponent(next)}`);
    await page.fill('#username', username);
    await page.fill('#password', PASSWORD);
    await Promise.all([page.waitForURL(`${web.url}${next}`), page.click('form[action="/login"] button[type=submit]')]);
  }

  async function enrolOnPage(label: string): Promise<void> {
    await page.fill('#webauthn-label', label);
    await Promise.all([page.waitForURL(/\/security\?notice=enrolled$/), page.click('#webauthn-add')]);
  }

  async function createStepUp(subject: string) {
    const res = await request(tg.app).post('/v1/stepup').set('Authorization', pay.basic).send({ subject, action: ACTION, context: CONTEXT, binding_message: 'Pay 2400.00 CNY to Shanghai Coffee Co.' });
    assert.equal(res.status, 201, res.text);
    return res.body as { stepup_id: string; user_url: string };
  }

  async function pollToken(id: string) {
    tg.clock.advance(3);
    return request(tg.app).post(`/v1/stepup/${id}/token`).set('Authorization', pay.basic).send();
  }

  it('log in, enrol a fingerprint on "my security", approve a payment on the step-up page: the client gets aal3 with amr hwk+user', async (t) => {
    if (needBrowser(t)) return;
    const user = await newUser();
    await signInOnPage(user.username);
    await enrolOnPage('Work laptop fingerprint');
    assert.match(await page.textContent('#webauthn-enrol') ?? '', /Work laptop fingerprint/);
    t.diagnostic(`screenshot ${await screenshot(page, 'security-enrolled')}`);
    const creds = await authenticator.credentials();
    assert.equal(creds.length, 1);
    assert.equal(creds[0]!.isResidentCredential, true);
    const row = await tg.gw.store.db.selectFrom('factors').select(['params', 'status', 'label']).where('user_id', '=', user.id).where('type', '=', 'webauthn').executeTakeFirstOrThrow();
    assert.equal(row.status, 'active');
    assert.equal(row.label, 'Work laptop fingerprint');
    const params = JSON.parse(row.params);
    assert.equal(params.credentialId, creds[0]!.credentialId.replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_'));
    assert.equal(params.backupEligible, false);

    const s = await createStepUp(user.username);
    await page.goto(s.user_url);
    await page.waitForSelector('#webauthn-use:not([hidden])');
    assert.match(await page.textContent('main') ?? '', /2400\.00 CNY/);
    t.diagnostic(`screenshot ${await screenshot(page, 'stepup-before')}`);
    await page.click('#webauthn-use');
    await page.waitForSelector('p.success');
    t.diagnostic(`screenshot ${await screenshot(page, 'stepup-approved')}`);

    const got = await pollToken(s.stepup_id);
    assert.equal(got.status, 200, got.text);
    const claims = await verifyStepUpToken(got.body.step_up_token, {
      issuer: web.url, audience: pay.clientId, jwks: createJwksCache({ jwksUri: `${web.url.replace('localhost', '127.0.0.1')}/.well-known/jwks.json` }),
      requiredAcr: 'urn:stepgate:aal3', expectedAction: ACTION, expectedContext: CONTEXT, expectedSubject: user.id, replayStore: new MemoryReplayStore(), clock: { now: () => tg.clock.now() },
    });
    assert.equal(claims.acr, 'urn:stepgate:aal3');
    assert.deepEqual(claims.amr, ['hwk', 'user']);
  });

  it('the Chinese pages: enrolment and the step-up page speak zh-CN', async (t) => {
    if (needBrowser(t)) return;
    await context.close();
    context = await browser!.newContext({ locale: 'zh-CN', extraHTTPHeaders: { 'Accept-Language': 'zh-CN' } });
    page = await context.newPage();
    authenticator = await VirtualAuthenticator.add(context, page);
    const user = await newUser();
    await signInOnPage(user.username);
    assert.match(await page.textContent('#webauthn-enrol') ?? '', /指纹、面容或安全密钥/);
    await enrolOnPage('工作电脑指纹');
    t.diagnostic(`screenshot ${await screenshot(page, 'security-enrolled-zh')}`);
    const s = await createStepUp(user.username);
    await page.goto(s.user_url);
    await page.waitForSelector('#webauthn-use:not([hidden])');
    assert.match(await page.textContent('#webauthn-use') ?? '', /使用指纹验证/);
    t.diagnostic(`screenshot ${await screenshot(page, 'stepup-zh')}`);
    await page.click('#webauthn-use');
    await page.waitForSelector('p.success');
    assert.equal((await pollToken(s.stepup_id)).status, 200);
  });

  it('with isUserVerified: false the fingerprint fails: the page says so and the step-up stays pending', async (t) => {
    if (needBrowser(t)) return;
    const user = await newUser();
    await signInOnPage(user.username);
    await enrolOnPage('Fingerprint');
    await authenticator.setUserVerified(false);
    const s = await createStepUp(user.username);
    await page.goto(s.user_url);
    await page.waitForSelector('#webauthn-use:not([hidden])');
    await page.click('#webauthn-use');
    await page.waitForSelector('#webauthn-status.error');
    t.diagnostic(`status: ${await page.textContent('#webauthn-status')}`);
    t.diagnostic(`screenshot ${await screenshot(page, 'stepup-uv-failed')}`);
    const polled = await pollToken(s.stepup_id);
    assert.equal(polled.body.code, 'authorization_pending');
    const row = await tg.gw.store.db.selectFrom('stepups').select('status').where('id', '=', s.stepup_id).executeTakeFirstOrThrow();
    assert.equal(row.status, 'pending');
  });

  async function signOut(): Promise<void> {
    await page.goto(`${web.url}/security`);
    await Promise.all([page.waitForURL(/\/login$/), page.click('form[action="/logout"] button')]);
    assert.equal((await context.cookies()).some((c) => c.name === 'stepgate_session'), false);
  }

  it('a second authenticator that is not registered fails: in the browser, and at the server when forced', async (t) => {
    if (needBrowser(t)) return;
    const user = await newUser();
    await signInOnPage(user.username);
    await enrolOnPage('Registered fingerprint');
    // The registered authenticator goes away; another one appears, holding a passkey of another user for this site.
    await authenticator.remove();
    authenticator = await VirtualAuthenticator.add(context, page);
    await signOut();
    const other = await newUser();
    await signInOnPage(other.username);
    await enrolOnPage('Other user key');
    await signOut();

    const s = await createStepUp(user.username);
    await page.goto(s.user_url);
    await page.waitForSelector('#webauthn-use:not([hidden])');
    const clicked = Date.now();
    await page.click('#webauthn-use');
    await page.waitForSelector('#webauthn-status.error', { timeout: 45_000 });
    t.diagnostic(`browser refused after ${Date.now() - clicked} ms: ${await page.textContent('#webauthn-status')}`);
    t.diagnostic(`screenshot ${await screenshot(page, 'stepup-unregistered')}`);
    // Forced: ask the browser for any credential of this site (the other user's) and send it.
    tg.clock.advance(2);
    const forced = await page.evaluate(async (id) => {
      const root = (globalThis as unknown as { document: PageDocument }).document.getElementById('webauthn-stepup')!;
      const csrf = root.dataset.stepupCsrf;
      const headers: Record<string, string> = { 'Content-Type': 'application/json' };
      const lib = await import('/static/vendor/simplewebauthn/index.js' as string);
      const started = (await (await fetch(`/stepup/${id}/webauthn/challenge`, { method: 'POST', headers, body: JSON.stringify({ _stepup_csrf: csrf }) })).json()) as { options: Record<string, unknown> };
      const credential = await lib.startAuthentication({ optionsJSON: { ...started.options, allowCredentials: [] } });
      const res = await fetch(`/stepup/${id}/webauthn/verify`, { method: 'POST', headers, body: JSON.stringify({ _stepup_csrf: csrf, credential }) });
      return { status: res.status, body: (await res.json()) as { code?: string } };
    }, s.stepup_id);
    assert.equal(forced.status, 400, JSON.stringify(forced.body));
    assert.equal(forced.body.code, 'factor_not_allowed');
    assert.equal((await pollToken(s.stepup_id)).body.code, 'authorization_pending');
  });

  it('passkey sign-in on /login through the username field\'s autofill, conditional UI [autofill]', async (t) => {
    if (needBrowser(t)) return;
    const user = await newUser();
    await signInOnPage(user.username);
    await enrolOnPage('Passkey');
    await page.goto(`${web.url}/healthz`);
    await context.clearCookies();
    // The virtual authenticator picks the offered passkey at once, as a user choosing it from autofill would.
    await page.goto(`${web.url}/login?next=/security`);
    await page.waitForURL(`${web.url}/security`);
    assert.match(await page.textContent('main') ?? '', new RegExp(user.username));
    const audit = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'login.succeeded').where('subject', '=', user.id).execute();
    assert.ok(audit.some((a) => JSON.parse(a.data).method === 'webauthn'));
  });

  it('passkey sign-in with the button, in a browser without WebAuthn autofill', async (t) => {
    if (needBrowser(t)) return;
    const user = await newUser();
    await signInOnPage(user.username);
    await enrolOnPage('Passkey');
    await signOut();
    await page.goto(`${web.url}/login?next=/security`);
    await page.waitForSelector('#webauthn-login-button:not([hidden])');
    t.diagnostic(`screenshot ${await screenshot(page, 'login-passkey')}`);
    await Promise.all([page.waitForURL(`${web.url}/security`), page.click('#webauthn-login-button')]);
    assert.match(await page.textContent('main') ?? '', new RegExp(user.username));
  });
});
