import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import request from 'supertest';
import { verifyAuditChain } from '../../src/audit/audit-log.ts';
import { FixedClock } from '../../src/clock.ts';
import { createUser, type Role } from '../../src/flows/users.ts';
import { type LateServer, lateServer, launchChromium, SCREENSHOT_DIR, screenshot, VirtualAuthenticator } from '../helpers/browser.ts';
import { hasTool, needTool } from '../helpers/env.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { needOathtool, needPskc, oathHotp, randomSeedHex, writePskc } from '../helpers/hardware-tokens.ts';
import { makeClient, setPolicies } from '../helpers/stepup-fixtures.ts';
import { DEFAULT_TOTP, insertActiveTotp, oathtoolTotp } from '../helpers/totp.ts';

/**
 * The console tour in a real browser (Debian's Chromium through playwright-core), one
 * browser and one gateway for the file, the cases in order (each builds on the last):
 * an administrator signs in with password + authenticator code, imports a PSKC file written
 * by python-pskc, assigns a token to a user, edits a policy and dry-runs it; the user does a
 * step-up with that token on the step-up page; the administrator finds it in the audit log
 * and verifies the chain; helpdesk cannot edit policies; the auditor cannot change anything;
 * the language switch turns every page of the tour Chinese, with no English message left.
 *
 * Every page is checked with axe-core (no serious or critical violation) and photographed
 * into test-output/screenshots/; with STEPGATE_SCREENSHOTS=docs/screenshots the same PNGs
 * are also written there (the README's screenshots).
 */

const PASSWORD = 'tour passphrase 5512';
const ACTION = 'payment_code.issue';
const SERIAL = 'TOUR-0001';
const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const EXTRA_SCREENSHOTS = process.env.STEPGATE_SCREENSHOTS === undefined || process.env.STEPGATE_SCREENSHOTS === '' ? undefined : resolve(process.env.STEPGATE_SCREENSHOTS);

/** The shots copied to STEPGATE_SCREENSHOTS for the README (the rest stay in test-output/). */
const DOC_SHOTS = new Set([
  'login', 'console-verify', 'console-dashboard', 'console-tokens', 'console-token-import', 'console-token', 'console-policies-dry-run', 'console-policy-diff',
  'console-users', 'console-user', 'console-clients', 'console-keys', 'console-audit-verified', 'console-policies-helpdesk', 'console-user-auditor',
  'stepup', 'stepup-approved', 'stepup-phone', 'console-audit-phone', 'security', 'security.zh-CN', 'console-dashboard.zh-CN', 'console-policies.zh-CN', 'console-user.zh-CN', 'stepup.zh-CN',
]);

const TOUR_POLICIES = `policies:
  - id: token-payments
    action: payment_code.issue
    priority: 10
    description: Payments up to 500.00 CNY with the hardware token.
    when:
      amount: { lte: "500.00", currency: CNY }
    require:
      anyOf: [[hardware_otp]]
    acr: urn:stepgate:aal2
  - id: large-payments
    action: payment_code.issue
    priority: 20
    require:
      anyOf: [[webauthn]]
    acr: urn:stepgate:aal3
`;

interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: { target: string[] }[];
}

describe('console tour in the browser', () => {
  let browser: Browser | undefined;
  let web: LateServer;
  let tg: TestGateway;
  let pay: Awaited<ReturnType<typeof makeClient>>;
  const secrets: Record<string, Buffer> = {};
  const ids: Record<string, string> = {};
  const contexts: BrowserContext[] = [];
  let admin: Page;
  let seed: string;
  let stepUpId = '';
  let savedVersion = 0;
  const policyVersion = async () => (await tg.gw.store.db.selectFrom('policy_sets').select('version').orderBy('version', 'desc').executeTakeFirstOrThrow()).version;
  /** The tour's pages (path → screenshot name), visited again in Chinese at the end. */
  const tour: { path: string; name: string }[] = [];

  before(async () => {
    web = await lateServer();
    tg = await createTestGateway({ config: { http: { publicUrl: web.url } }, clock: new FixedClock(Date.UTC(2026, 11, 1, 9, 0, 0)) });
    web.setHandler(tg.app);
    const people: [string, Role[]][] = [['root', ['admin']], ['desk', ['helpdesk']], ['audit', ['auditor']], ['lena', []], ['keyadmin', ['admin']]];
    for (const [username, roles] of people) {
      const u = await createUser(tg.gw, { username, password: PASSWORD, roles, displayName: username === 'lena' ? 'Lena Wang' : undefined }, { actor: null });
      ids[username] = u.id;
      if (roles.length > 0 && username !== 'keyadmin') secrets[username] = (await insertActiveTotp(tg.gw, u.id)).secret;
    }
    await setPolicies(tg.gw, [{ id: 'everything-webauthn', action: ACTION, priority: 10, require: { anyOf: [['webauthn']] }, acr: 'urn:stepgate:aal2', tokenTtlSeconds: 120 }]);
    pay = await makeClient(tg.gw, 'payment-code service', [ACTION]);
    if (hasTool('chromium')) browser = await launchChromium();
  });
  after(async () => {
    for (const c of contexts) await c.close().catch(() => undefined);
    await browser?.close();
    await web.close();
    await tg.close();
    console.log(`# screenshots: ${SCREENSHOT_DIR}${EXTRA_SCREENSHOTS === undefined ? '' : ` and ${EXTRA_SCREENSHOTS}`}`);
  });

  function need(t: TestContext): boolean {
    return needTool(t, 'chromium', 'chromium') || needOathtool(t) || needPskc(t) || browser === undefined;
  }

  async function newPage(): Promise<Page> {
    assert.ok(browser !== undefined);
    // A phone-sized viewport would hide nothing here; the console is checked at a laptop's width.
    const context = await browser.newContext({ locale: 'en-US', viewport: { width: 1280, height: 900 } });
    contexts.push(context);
    return context.newPage();
  }

  /** axe-core in the page (evaluated over CDP, so the page's CSP stays as it is): no serious or critical violation. */
  async function checkAccessibility(page: Page, name: string): Promise<void> {
    await page.evaluate(AXE_SOURCE);
    // Page-side code as a string: the test project compiles without the DOM library.
    const violations = (await page.evaluate(
      `axe.run(document, { resultTypes: ['violations'], runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } }).then((r) => r.violations)`,
    )) as AxeViolation[];
    const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    assert.deepEqual(bad.map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`), [], `axe on ${name}`);
  }

  async function shoot(t: TestContext, page: Page, name: string): Promise<void> {
    await checkAccessibility(page, name);
    const path = await screenshot(page, name);
    if (EXTRA_SCREENSHOTS !== undefined && DOC_SHOTS.has(name)) {
      mkdirSync(EXTRA_SCREENSHOTS, { recursive: true });
      copyFileSync(path, join(EXTRA_SCREENSHOTS, `${name}.png`));
    }
    t.diagnostic(`screenshot ${path}`);
  }

  /** Visits a console page, checks it and remembers it for the Chinese pass. */
  async function visit(t: TestContext, page: Page, path: string, name: string): Promise<void> {
    await page.goto(`${web.url}${path}`);
    await shoot(t, page, name);
    if (!tour.some((p) => p.name === name)) tour.push({ path, name });
  }

  /** The page's own words: its text without data shown as code, documents being edited and form values. */
  async function wordsOf(page: Page): Promise<string> {
    return page.evaluate(`(() => {
      const body = document.body.cloneNode(true);
      for (const el of body.querySelectorAll('code, pre, textarea, input, select, option')) el.remove();
      return body.textContent || '';
    })()`);
  }

  function totp(who: string): string {
    return oathtoolTotp(secrets[who] as Buffer, DEFAULT_TOTP, Math.floor(tg.clock.now().getTime() / 1000));
  }

  /** Password on the sign-in page, then the code on the console's second-factor page. */
  async function signInToConsole(t: TestContext, page: Page, who: string, photograph = false): Promise<void> {
    await page.goto(`${web.url}/login?next=%2Fconsole`);
    await page.fill('#username', who);
    await page.fill('#password', PASSWORD);
    await Promise.all([page.waitForURL(/\/console\/verify\?next=%2Fconsole$/), page.click('form[action="/login"] button[type=submit]')]);
    if (photograph) await shoot(t, page, 'console-verify');
    await page.fill('#code', totp(who));
    await Promise.all([page.waitForURL(`${web.url}/console`), page.click('form[action="/console/verify"] button[type=submit]')]);
    // Each code is accepted once: the next sign-in (another role) uses the next time step.
    tg.clock.advance(30);
  }

  it('the administrator signs in with password and an authenticator code; the sign-in pages pass axe', async (t) => {
    if (need(t)) return;
    admin = await newPage();
    await admin.goto(`${web.url}/login`);
    await shoot(t, admin, 'login');
    await signInToConsole(t, admin, 'root', true);
    assert.equal(await admin.textContent('h1'), 'Dashboard');
    await visit(t, admin, '/console', 'console-dashboard');
  });

  it('imports a PSKC file and sees the per-token report', async (t) => {
    if (need(t)) return;
    seed = randomSeedHex();
    const pskc = writePskc({ tokens: [{ serial: SERIAL, secret_hex: seed, algorithm: 'hotp', counter: 0, digits: 6, manufacturer: 'Feitian' }, { serial: 'TOUR-0002', secret_hex: randomSeedHex(), algorithm: 'hotp', counter: 0, manufacturer: 'Feitian' }] });
    await visit(t, admin, '/console/tokens', 'console-tokens');
    // First a file that is refused (a serial twice): the page's script shows the server's answer, the problems listed by serial.
    const twice = writePskc({ tokens: [{ serial: 'TOUR-DUP', secret_hex: randomSeedHex(), algorithm: 'hotp' }, { serial: 'TOUR-DUP', secret_hex: randomSeedHex(), algorithm: 'hotp' }] });
    await admin.setInputFiles('#file', { name: 'duplicates.pskc.xml', mimeType: 'application/pskc+xml', buffer: twice });
    await admin.fill('#reason-import', 'Delivery note 2026-12 from Feitian');
    await admin.click('#token-import-form button[type=submit]');
    await admin.waitForSelector('#error-import');
    assert.match((await admin.textContent('#error-import')) ?? '', /TOUR-DUP/);
    await checkAccessibility(admin, 'console-tokens-refused');
    await admin.setInputFiles('#file', { name: 'tour-batch.pskc.xml', mimeType: 'application/pskc+xml', buffer: pskc });
    await admin.fill('#reason-import', 'Delivery note 2026-12 from Feitian');
    await Promise.all([admin.waitForURL(/\/console\/tokens\/imports\/[\w-]+$/), admin.click('#token-import-form button[type=submit]')]);
    assert.match((await admin.textContent('main')) ?? '', /2 tokens imported from tour-batch\.pskc\.xml/);
    assert.equal(await admin.locator(`tr[data-serial="${SERIAL}"]`).count(), 1);
    await shoot(t, admin, 'console-token-import');
    const importId = (await tg.gw.store.db.selectFrom('hardware_token_imports').select('id').executeTakeFirstOrThrow()).id;
    tour.push({ path: `/console/tokens/imports/${importId}`, name: 'console-token-import' });
  });

  it('assigns the token to a user by serial and the code it shows', async (t) => {
    if (need(t)) return;
    await admin.click(`tr[data-serial="${SERIAL}"] a`);
    await admin.waitForURL(`${web.url}/console/tokens/${SERIAL}`);
    await admin.fill('#username', 'lena');
    await admin.fill('#assign-code', oathHotp(seed, 0));
    await admin.fill('#reason-assign', 'New token handed over at the branch, ticket 8812');
    await Promise.all([admin.waitForURL(/notice=assigned$/), admin.click('form[action$="/assign"] button[type=submit]')]);
    assert.equal(await admin.getAttribute('dd[data-state]', 'data-state'), 'assigned');
    await shoot(t, admin, 'console-token');
    tour.push({ path: `/console/tokens/${SERIAL}`, name: 'console-token' });
  });

  it('edits the policy set and dry-runs it with the reasons', async (t) => {
    if (need(t)) return;
    await visit(t, admin, '/console/policies', 'console-policies');
    const before = await policyVersion();
    await admin.fill('#policies', TOUR_POLICIES);
    await admin.fill('#comment', 'Small payments with the hardware token');
    await Promise.all([admin.waitForURL(/notice=saved$/), admin.click('#policy-form button[type=submit]:not(#dry-run-button)')]);
    savedVersion = await policyVersion();
    assert.equal(savedVersion, before + 1);
    await admin.fill('#dr-action', ACTION);
    await admin.fill('#dr-context', 'amount: "120.00"\ncurrency: CNY');
    await admin.fill('#dr-subject', 'lena');
    await Promise.all([admin.waitForURL(/\/console\/policies\/evaluate$/), admin.click('#dry-run-button')]);
    assert.equal(await admin.getAttribute('[data-decision]', 'data-decision'), 'allow');
    assert.match((await admin.textContent('#dry-run-result')) ?? '', /Allowed by policy token-payments/);
    await shoot(t, admin, 'console-policies-dry-run');
    await visit(t, admin, `/console/policies/diff?from=${before}&to=${savedVersion}`, 'console-policy-diff');
  });

  it('the user approves a payment with the hardware token on the step-up page', async (t) => {
    if (need(t)) return;
    const created = await request(tg.app).post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'lena', action: ACTION, context: { amount: '120.00', currency: 'CNY', payee: 'Shanghai Coffee Co.' }, binding_message: 'Pay 120.00 CNY to Shanghai Coffee Co.' });
    assert.equal(created.status, 201, created.text);
    stepUpId = created.body.stepup_id as string;
    const user = await newPage();
    await user.goto(created.body.user_url as string);
    await user.waitForSelector('#f-hardware_otp');
    await shoot(t, user, 'stepup');
    // A mistyped code first: the page says so and the attempt counts.
    const right = oathHotp(seed, 1);
    await user.fill('#f-hardware_otp', right === '000000' ? '111111' : '000000');
    await user.click('form.factor button[type=submit]');
    await user.waitForSelector('p.error[role="alert"]');
    await shoot(t, user, 'stepup-wrong-code');
    await user.fill('#f-hardware_otp', right);
    await user.click('form.factor button[type=submit]');
    await user.waitForSelector('p.success');
    await shoot(t, user, 'stepup-approved');
  });

  it('the administrator sees the step-up in the audit log and verifies the chain', async (t) => {
    if (need(t)) return;
    await visit(t, admin, '/console/audit?type=stepup.*', 'console-audit');
    // The console on a phone: tables scroll sideways inside their (keyboard-focusable) box.
    await admin.setViewportSize({ width: 375, height: 740 });
    await shoot(t, admin, 'console-audit-phone');
    await admin.setViewportSize({ width: 1280, height: 900 });
    const rows = admin.locator('tr[data-type="stepup.completed"]');
    assert.equal(await rows.count(), 1);
    assert.match((await rows.first().textContent()) ?? '', new RegExp(stepUpId));
    await Promise.all([admin.waitForURL(/\/console\/audit\/verify$/), admin.click('#verify-chain')]);
    assert.equal(await admin.getAttribute('#chain-result', 'data-chain-ok'), 'true');
    assert.match((await admin.textContent('#chain-result')) ?? '', /The chain is intact/);
    await shoot(t, admin, 'console-audit-verified');
    assert.equal((await verifyAuditChain(tg.gw.store.db)).ok, true);
    for (const [path, name] of [['/console', 'console-dashboard'], ['/console/users?q=lena', 'console-users'], [`/console/users/${ids.lena}`, 'console-user'], ['/console/clients', 'console-clients'], ['/console/keys', 'console-keys']] as const) {
      await visit(t, admin, path, name);
    }
  });

  it('helpdesk cannot edit policies: no save button, and a forged save is refused with 403', async (t) => {
    if (need(t)) return;
    const desk = await newPage();
    await signInToConsole(t, desk, 'desk');
    await desk.goto(`${web.url}/console/policies`);
    assert.equal(await desk.getAttribute('#policies', 'readonly'), '');
    assert.equal(await desk.locator('#comment').count(), 0);
    assert.equal(await desk.locator('a[href="/console/audit"]').count(), 0);
    await shoot(t, desk, 'console-policies-helpdesk');
    const csrf = await desk.inputValue('#policy-form input[name="_csrf"]');
    const forged = await desk.request.post(`${web.url}/console/policies`, { form: { _csrf: csrf, policies: 'policies: []', comment: 'helpdesk wipes the policies', baseVersion: String(savedVersion) }, maxRedirects: 0 });
    assert.equal(forged.status(), 403);
    assert.equal(await policyVersion(), savedVersion);
    const audit = await desk.request.get(`${web.url}/console/audit`);
    assert.equal(audit.status(), 403);
  });

  it('the auditor reads everything and cannot change anything', async (t) => {
    if (need(t)) return;
    const auditor = await newPage();
    await signInToConsole(t, auditor, 'audit');
    await auditor.goto(`${web.url}/console/users/${ids.lena}`);
    assert.equal(await auditor.locator('main form[method="post"]').count(), 0, 'no action forms on the user page');
    await shoot(t, auditor, 'console-user-auditor');
    for (const path of ['/console/tokens', `/console/tokens/${SERIAL}`, '/console/clients', '/console/keys']) {
      await auditor.goto(`${web.url}${path}`);
      assert.equal(await auditor.locator('main form[method="post"]').count(), 0, `no forms on ${path}`);
    }
    await auditor.goto(`${web.url}/console/policies`);
    assert.equal(await auditor.locator('#comment').count(), 0);
    const csrf = await auditor.inputValue('#policy-form input[name="_csrf"]');
    const before = (await verifyAuditChain(tg.gw.store.db)).rows;
    for (const [path, form] of [
      [`/console/users/${ids.lena}/disable`, { reason: 'auditor disables' }],
      [`/console/tokens/${SERIAL}/revoke`, { reason: 'auditor revokes' }],
      ['/console/keys/rotate', { alg: 'ES256', reason: 'auditor rotates' }],
      ['/console/policies', { policies: 'policies: []', comment: 'auditor wipes', baseVersion: String(savedVersion) }],
    ] as const) {
      const res = await auditor.request.post(`${web.url}${path}`, { form: { _csrf: csrf, ...form }, maxRedirects: 0 });
      assert.equal(res.status(), 403, path);
    }
    assert.equal((await verifyAuditChain(tg.gw.store.db)).rows, before, 'the refused requests wrote nothing');
    assert.equal((await tg.gw.store.db.selectFrom('hardware_tokens').select('state').where('serial', '=', SERIAL).executeTakeFirstOrThrow()).state, 'assigned');
    // Verifying the chain is reading: the auditor may.
    await auditor.goto(`${web.url}/console/audit`);
    await Promise.all([auditor.waitForURL(/\/console\/audit\/verify$/), auditor.click('#verify-chain')]);
    assert.equal(await auditor.getAttribute('#chain-result', 'data-chain-ok'), 'true');
  });

  it('the language switch turns every page of the tour Chinese, with no English message left', async (t) => {
    if (need(t)) return;
    await admin.goto(`${web.url}/console`);
    await Promise.all([admin.waitForURL(`${web.url}/console`), admin.click('form.lang-switch button')]);
    assert.equal(await admin.getAttribute('html', 'lang'), 'zh-CN');
    const en = JSON.parse(readFileSync(new URL('../../views/i18n/en.json', import.meta.url), 'utf8')) as Record<string, string>;
    const zh = JSON.parse(readFileSync(new URL('../../views/i18n/zh-CN.json', import.meta.url), 'utf8')) as Record<string, string>;
    // English messages (the fixed parts of each, around placeholders) that must not show on a Chinese page.
    const english = [...new Set(Object.entries(en).filter(([k, v]) => zh[k] !== v).flatMap(([, v]) => v.split(/\{\w+\}/)).map((s) => s.trim()).filter((s) => s.length >= 5 && /[a-z]{3}/i.test(s)))];
    for (const { path, name } of tour) {
      await admin.goto(`${web.url}${path}`);
      assert.equal(await admin.getAttribute('html', 'lang'), 'zh-CN', path);
      const text = await wordsOf(admin);
      assert.match(text, /\p{Script=Han}/u, path);
      const left = english.filter((s) => text.includes(s));
      assert.deepEqual(left, [], `English left on ${path}`);
      await shoot(t, admin, `${name}.zh-CN`);
    }
    // The user's step-up page in Chinese too.
    const created = await request(tg.app).post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'lena', action: ACTION, context: { amount: '88.00', currency: 'CNY', payee: '上海咖啡' }, binding_message: '向上海咖啡支付 88.00 元' });
    assert.equal(created.status, 201, created.text);
    const user = await newPage();
    await user.goto(created.body.user_url as string);
    await Promise.all([user.waitForURL(/\/stepup\//), user.click('form.lang-switch button')]);
    assert.equal(await user.getAttribute('html', 'lang'), 'zh-CN');
    const text = await wordsOf(user);
    assert.deepEqual(english.filter((s) => text.includes(s)), []);
    await shoot(t, user, 'stepup.zh-CN');
  });

  it("the user's own pages (my security, authenticator enrolment) pass axe, in both languages", async (t) => {
    if (need(t)) return;
    const user = await newPage();
    await user.goto(`${web.url}/login?next=%2Fsecurity`);
    await user.fill('#username', 'lena');
    await user.fill('#password', PASSWORD);
    await Promise.all([user.waitForURL(`${web.url}/security`), user.click('form[action="/login"] button[type=submit]')]);
    assert.equal(await user.locator('a[href="/console"]').count(), 0, 'no console link for a user without a staff role');
    await shoot(t, user, 'security');
    // She has a hardware token and signed in with the password only: changing factors asks
    // her to confirm with the token first (flows/session-confirm.ts), on the step-up page.
    assert.equal(await user.locator('form[action="/security/totp"]').count(), 0, 'no enrolment form before she confirms');
    await Promise.all([user.waitForURL(`${web.url}/security/confirm`), user.click('#reauth-hint a[href="/security/confirm"]')]);
    await shoot(t, user, 'security-confirm');
    await Promise.all([user.waitForURL(/\/stepup\/stp_/), user.click('form[action="/security/confirm"] button[type=submit]')]);
    await user.waitForSelector('#f-hardware_otp');
    await shoot(t, user, 'security-confirm-stepup');
    await user.fill('#f-hardware_otp', oathHotp(seed, 6));
    await Promise.all([user.waitForURL(`${web.url}/security?notice=confirmed`), user.click('form.factor button[type=submit]')]);
    await Promise.all([user.waitForURL(`${web.url}/security/totp`), user.click('form[action="/security/totp"] button[type=submit]')]);
    await shoot(t, user, 'security-totp-enrol');
    // A page that answered a POST cannot be fetched again: the switch goes back to the page the form was on.
    await Promise.all([user.waitForURL(/\/security(\?notice=confirmed)?$/), user.click('form.lang-switch button')]);
    assert.equal(await user.getAttribute('html', 'lang'), 'zh-CN');
    await shoot(t, user, 'security.zh-CN');
    await Promise.all([user.waitForURL(`${web.url}/security/totp`), user.click('form[action="/security/totp"] button[type=submit]')]);
    assert.equal(await user.getAttribute('html', 'lang'), 'zh-CN');
    await shoot(t, user, 'security-totp-enrol.zh-CN');
    // The account pages: signed-in devices, and the password form with a refused attempt.
    await user.goto(`${web.url}/security/sessions`);
    assert.equal(await user.locator('#sessions li[data-current="true"]').count(), 1);
    await shoot(t, user, 'security-sessions.zh-CN');
    await user.goto(`${web.url}/security/password`);
    await user.fill('#current_password', PASSWORD);
    await user.fill('#new_password', 'a fresh passphrase of hers 9');
    await user.fill('#new_password_confirm', 'a different passphrase 9');
    await user.click('#change-password button[type=submit]');
    await user.waitForSelector('#password-errors');
    assert.equal(await user.getAttribute('#new_password_confirm', 'aria-invalid'), 'true');
    await shoot(t, user, 'security-password-refused.zh-CN');
  });

  it('an administrator whose second factor is a passkey completes the session with it on the second-factor page', async (t) => {
    if (need(t)) return;
    assert.ok(browser !== undefined);
    const context = await browser.newContext({ locale: 'en-US' });
    contexts.push(context);
    // No WebAuthn autofill on /login: the virtual authenticator would answer it at once.
    await context.addInitScript(() => {
      const pkc = (globalThis as { PublicKeyCredential?: object }).PublicKeyCredential;
      if (pkc !== undefined) Object.defineProperty(pkc, 'isConditionalMediationAvailable', { value: async () => false });
    });
    const page = await context.newPage();
    const authenticator = await VirtualAuthenticator.add(context, page);
    try {
      await page.goto(`${web.url}/login?next=%2Fsecurity`);
      await page.fill('#username', 'keyadmin');
      await page.fill('#password', PASSWORD);
      await Promise.all([page.waitForURL(`${web.url}/security`), page.click('form[action="/login"] button[type=submit]')]);
      // A password session with no second factor: the console sends it to enrol one.
      await page.goto(`${web.url}/console`);
      assert.equal(page.url(), `${web.url}/security?notice=consoleEnrol`);
      await page.fill('#webauthn-label', 'Admin laptop');
      await Promise.all([page.waitForURL(/\/security\?notice=enrolled$/), page.click('#webauthn-add')]);
      await page.goto(`${web.url}/console/users`);
      assert.match(page.url(), /\/console\/verify\?next=%2Fconsole%2Fusers$/);
      await page.waitForSelector('#console-passkey-button:not([hidden])');
      await shoot(t, page, 'console-verify-passkey');
      await Promise.all([page.waitForURL(`${web.url}/console/users`), page.click('#console-passkey-button')]);
      assert.equal(await page.textContent('h1'), 'Users');
    } finally {
      await authenticator.clear().catch(() => undefined);
    }
  });

  it('the step-up page is readable on a phone', async (t) => {
    if (need(t)) return;
    assert.ok(browser !== undefined);
    const context = await browser.newContext({ locale: 'en-US', viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    contexts.push(context);
    const phone = await context.newPage();
    const created = await request(tg.app).post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'lena', action: ACTION, context: { amount: '42.00', currency: 'CNY', payee: 'Metro ticket machine' }, binding_message: 'Pay 42.00 CNY to Metro ticket machine' });
    await phone.goto(created.body.user_url as string);
    await phone.waitForSelector('#f-hardware_otp');
    // Nothing wider than the screen: no sideways scrolling on the page people open on phones.
    const overflow = (await phone.evaluate('document.documentElement.scrollWidth - document.documentElement.clientWidth')) as number;
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than the phone`);
    await shoot(t, phone, 'stepup-phone');
  });
});
