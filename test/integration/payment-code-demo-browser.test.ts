import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import { systemClock } from '../../src/clock.ts';
import { offlineCode, parseDeviceSeed } from '../../src/payment-code/offline-otp.ts';
import { needTool } from '../helpers/env.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { createPDatabase, type InProcessP, PASSWORD_POLICIES, type PDatabase, pConfig, startInProcessP } from '../helpers/payment-code.ts';
import { freePort } from '../helpers/processes.ts';
import { makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * The demo wallet in a real browser (headless Chromium): the redirect to the gateway's step-up
 * page and back (CSP form-action must allow it), the pictures, the countdown script, and the
 * offline generator script, whose codes must equal the reference generator's.
 */
const CHROMIUM = '/usr/bin/chromium';
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function serve(app: Parameters<typeof createServer>[1], port: number): Promise<Server> {
  const server = createServer(app);
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

for (const dialect of testDialects()) {
  describe(`the demo wallet in Chromium (${dialect})`, () => {
    let tg: TestGateway;
    let gatewayServer: Server;
    let db: PDatabase;
    let p: InProcessP;
    let pServer: Server;
    let browser: Browser | undefined;
    let pUrl = '';

    before(async () => {
      const gatewayPort = await freePort();
      const pPort = await freePort();
      pUrl = `http://127.0.0.1:${pPort}`;
      tg = await createTestGateway({ dialect, clock: systemClock, config: { http: { publicUrl: `http://127.0.0.1:${gatewayPort}` }, stepup: { pollIntervalSeconds: 1 } } });
      await setPolicies(tg.gw, PASSWORD_POLICIES);
      const alice = await makeUser(tg.gw, 'alice');
      const client = await makeClient(tg.gw, 'payment-code service', ['payment_code.issue', 'payment_code.offline_seed'], [`${pUrl}/demo/return`]);
      gatewayServer = await serve(tg.app, gatewayPort);
      db = createPDatabase(dialect);
      const gatewayUrl = `http://127.0.0.1:${gatewayPort}`;
      p = await startInProcessP(pConfig({ url: gatewayUrl, issuer: gatewayUrl, client }, db, { http: { publicUrl: pUrl }, demo: { users: [`Alice=${alice.id}`] } }));
      // startInProcessP listens on a random port; the browser needs the one P believes it has.
      pServer = await serve(p.svc.app, pPort);
    });
    after(async () => {
      await browser?.close();
      for (const server of [pServer, gatewayServer]) {
        if (server === undefined) continue;
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
      await p?.close();
      await tg?.close();
      await db?.drop();
    });

    it('pay with a code: wallet → gateway step-up page → back to the code, countdown running → the till', async (t) => {
      if (needTool(t, CHROMIUM, 'chromium')) return;
      browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
      const page = await browser.newPage();
      const violations: string[] = [];
      page.on('console', (m) => {
        if (/Content Security Policy/.test(m.text())) violations.push(m.text());
      });
      await page.goto(`${pUrl}/demo`);
      assert.match(await page.textContent('.demo-banner') ?? '', /DEMO — development only/);
      await page.fill('form[action="/demo/pay"] input[name="amountLimit"]', '66.00');
      await page.click('form[action="/demo/pay"] button');
      await page.waitForURL(/\/stepup\/stp_/);
      assert.match(await page.textContent('body') ?? '', /66\.00 CNY/);
      await page.fill('input[name="password"]', PASSWORD);
      await page.click('form.factor button[type="submit"]');
      await page.waitForURL(/\/demo\/return\?stepup_id=stp_/, { timeout: 15_000 });
      assert.deepEqual(violations, []);
      const digits = await page.getAttribute('input[name="code"]', 'value');
      assert.match(digits ?? '', /^181\d{15}$/);
      // The countdown script runs under the page's CSP (script-src 'self').
      await page.waitForFunction("/Valid for \\d+ s/.test(document.querySelector('.countdown')?.textContent ?? '')");
      const images = await page.$$eval('img', (imgs) => imgs.map((i) => (i as unknown as { naturalWidth: number }).naturalWidth));
      assert.equal(images.length, 3);
      assert.ok(images.every((w) => w > 100), String(images));
      await page.click('form[action="/demo/till"] button');
      await page.waitForSelector('h1');
      assert.equal(await page.textContent('h1'), 'Paid');
    });

    it('offline codes: the page provisions a seed once and its script makes the same codes as the reference generator', async (t) => {
      if (needTool(t, CHROMIUM, 'chromium')) return;
      browser ??= await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
      const page = await browser.newPage();
      await page.goto(`${pUrl}/demo`);
      await page.click('form[action="/demo/offline"] button');
      await page.waitForURL(/\/stepup\/stp_/);
      await page.fill('input[name="password"]', PASSWORD);
      await page.click('form.factor button[type="submit"]');
      await page.waitForURL(/\/demo\/return\?stepup_id=stp_/, { timeout: 15_000 });
      const seedText = (await page.getAttribute('[data-device-seed]', 'data-device-seed')) ?? '';
      const seed = parseDeviceSeed(seedText);
      assert.ok(seed !== undefined, seedText);
      await page.waitForFunction("/^\\d{2} \\d{4} \\d{4} \\d{4} \\d{4}$/.test(document.querySelector('[data-offline-code]')?.textContent ?? '')");
      // The page refreshes once a second: its code is the one for now, or for a second or two ago.
      const shown = ((await page.textContent('[data-offline-code]')) ?? '').replaceAll(' ', '');
      const now = Date.now();
      const expected = new Set([offlineCode(seed, new Date(now - 2000)), offlineCode(seed, new Date(now))]);
      assert.ok(expected.has(shown), `${shown} not in ${[...expected].join(', ')}`);
      assert.equal(await page.evaluate("localStorage.getItem('stepgate-demo-device-seed')"), seedText);
    });
  });
}
