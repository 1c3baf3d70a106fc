import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { loadConfig } from '../../src/config/load-config.ts';
import { savePolicySet } from '../../src/flows/policies.ts';
import { createGateway } from '../../src/gateway.ts';
import { needTool, TEST_DATABASE_URL } from '../helpers/env.ts';
import { BIN, ROOT, zbar } from '../helpers/payment-code.ts';
import { freePort } from '../helpers/processes.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * `npm start` runs `stepgate demo`: the gateway and the payment-code service together, with
 * a seeded demo user, client registration and policies. Driven here like a browser would:
 * the demo wallet, the gateway's step-up page, back to the code, the demo till.
 */


function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('STEPGATE_')) env[k] = v;
  return { ...env, ...extra };
}

interface Demo {
  child: ChildProcess;
  stderr(): string;
  exited: Promise<[number | null, NodeJS.Signals | null]>;
}

function startDemo(env: Record<string, string>): Demo {
  const child = spawn(process.execPath, [BIN, 'demo'], { cwd: ROOT, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stdout!.resume();
  child.stderr!.on('data', (c: Buffer) => {
    err += c.toString('utf8');
  });
  return { child, stderr: () => err, exited: once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]> };
}

async function waitFor(demo: Demo, text: string, timeoutMs = 40_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!demo.stderr().includes(text)) {
    if (demo.child.exitCode !== null) assert.fail(`demo exited with ${demo.child.exitCode}: ${demo.stderr()}`);
    if (Date.now() > deadline) assert.fail(`no "${text}" within ${timeoutMs} ms: ${demo.stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A tiny browser: one cookie jar per host:port, redirects followed by hand. */
class Browser {
  readonly jars = new Map<string, Map<string, string>>();

  async request(url: string, init: { method?: string; form?: Record<string, string> } = {}): Promise<{ status: number; location: string | null; text: string; url: string }> {
    const u = new URL(url);
    const jar = this.jars.get(u.host) ?? new Map<string, string>();
    this.jars.set(u.host, jar);
    const headers: Record<string, string> = {};
    if (jar.size > 0) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    if (init.form !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetch(url, { method: init.method ?? 'GET', headers, redirect: 'manual', ...(init.form === undefined ? {} : { body: new URLSearchParams(init.form).toString() }) });
    for (const c of res.headers.getSetCookie()) {
      const [pair = ''] = c.split(';');
      const eq = pair.indexOf('=');
      jar.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
    const location = res.headers.get('location');
    return { status: res.status, location: location === null ? null : new URL(location, url).toString(), text: await res.text(), url };
  }
}

function hidden(html: string, name: string): string {
  const m = new RegExp(`name="${name}" value="([^"]*)"`).exec(html);
  assert.ok(m !== null, `no ${name} in the page`);
  return m[1] as string;
}

for (const dialect of testDialects()) {
  describe(`npm start: the demo (gateway + payment-code service) (${dialect})`, () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'stepgate-demo-'));
    const schemas = [`g_${process.pid}_${randomBytes(4).toString('hex')}`, `p_${process.pid}_${randomBytes(4).toString('hex')}`];
    after(async () => {
      rmSync(dataDir, { recursive: true, force: true });
      if (dialect === 'postgres') {
        const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
        await client.connect();
        try {
          for (const s of schemas) await client.query(`drop schema if exists ${s} cascade`);
        } finally {
          await client.end();
        }
      }
    });

    it('starts both, the demo user pays with a code through the real pages, Ctrl-C stops both; a restart keeps working', async (t) => {
      const gatewayPort = await freePort();
      const pPort = await freePort();
      const env: Record<string, string> = {
        STEPGATE_DATA_DIR: dataDir,
        STEPGATE_HTTP_HOST: '127.0.0.1',
        STEPGATE_HTTP_PORT: String(gatewayPort),
        STEPGATE_PUBLIC_URL: `http://127.0.0.1:${gatewayPort}`,
        STEPGATE_PAYMENT_CODE_HTTP_HOST: '127.0.0.1',
        STEPGATE_PAYMENT_CODE_HTTP_PORT: String(pPort),
        STEPGATE_PAYMENT_CODE_PUBLIC_URL: `http://127.0.0.1:${pPort}`,
        ...(dialect === 'postgres'
          ? {
              STEPGATE_DATABASE_URL: TEST_DATABASE_URL,
              STEPGATE_DATABASE_SCHEMA: schemas[0] as string,
              STEPGATE_PAYMENT_CODE_DATABASE_URL: TEST_DATABASE_URL,
              STEPGATE_PAYMENT_CODE_DATABASE_SCHEMA: schemas[1] as string,
            }
          : {}),
      };
      const demo = startDemo(env);
      try {
        await waitFor(demo, 'Ctrl-C stops both');
        const banner = demo.stderr();
        assert.match(banner, new RegExp(`demo wallet: +http://127\\.0\\.0\\.1:${pPort}/demo`));
        assert.match(banner, /demo user: +demo \/ demo-/);
        assert.match(banner, /first administrator/);
        const password = (JSON.parse(readFileSync(join(dataDir, 'demo-credentials.json'), 'utf8')) as Record<string, string>).demo as string;
        assert.ok(banner.includes(password));

        const browser = new Browser();
        const wallet = await browser.request(`http://127.0.0.1:${pPort}/demo`);
        assert.equal(wallet.status, 200);
        assert.match(wallet.text, /DEMO — development only/);
        const pay = await browser.request(`http://127.0.0.1:${pPort}/demo/pay`, { method: 'POST', form: { _csrf: hidden(wallet.text, '_csrf'), username: 'demo', amountLimit: '88.00', payee: 'Demo Coffee' } });
        assert.equal(pay.status, 303, pay.text);
        assert.ok(pay.location?.startsWith(`http://127.0.0.1:${gatewayPort}/stepup/stp_`), String(pay.location));
        const moved = await browser.request(pay.location as string);
        assert.equal(moved.status, 303);
        const stepupPage = await browser.request(moved.location as string);
        assert.equal(stepupPage.status, 200);
        assert.match(stepupPage.text, /88\.00 CNY/);
        assert.match(stepupPage.text, /Demo Coffee/);
        const verify = await browser.request(`${moved.location}/verify`, { method: 'POST', form: { _stepup_csrf: hidden(stepupPage.text, '_stepup_csrf'), factor: 'password', password } });
        assert.equal(verify.status, 303, verify.text);
        assert.ok(verify.location?.startsWith(`http://127.0.0.1:${pPort}/demo/return?stepup_id=stp_`), String(verify.location));
        const codePage = await browser.request(verify.location as string);
        assert.equal(codePage.status, 200, codePage.text);
        const digits = hidden(codePage.text, 'code');
        assert.match(digits, /^181\d{15}$/);
        assert.match(codePage.text, /data-expires-at="/);
        if (!needTool(t, 'zbarimg', 'zbar-tools')) {
          const barcode = /alt="Code 128 barcode of the payment code" src="data:image\/png;base64,([^"]+)"/.exec(codePage.text)?.[1];
          assert.ok(barcode !== undefined);
          assert.deepEqual(await zbar(Buffer.from(barcode, 'base64'), dataDir, 'demo-barcode'), [digits]);
        }
        // Someone else's browser with the return URL sees nothing.
        const stranger = await new Browser().request(verify.location as string);
        assert.equal(stranger.status, 401);
        const till = await browser.request(`http://127.0.0.1:${pPort}/demo/till`, { method: 'POST', form: { _csrf: hidden(codePage.text, '_csrf'), code: digits, amount: '12.50', merchant: 'Demo Coffee' } });
        assert.equal(till.status, 200, till.text);
        assert.match(till.text, /<h1>Paid<\/h1>/);
        assert.match(till.text, /12\.50 CNY/);
      } finally {
        demo.child.kill('SIGINT');
        const [code] = await demo.exited;
        assert.equal(code, 0, demo.stderr());
      }
      // Nothing of P is left listening.
      await assert.rejects(fetch(`http://127.0.0.1:${pPort}/healthz`));
      // Restarting (seeding is idempotent, the client secret is rotated) is the same on either database.
      if (dialect !== 'sqlite') return;

      // An administrator changes the policies between two starts: the demo must not undo it.
      const gw = await createGateway(loadConfig({ env }));
      try {
        await savePolicySet(gw, [{ id: 'admin-set', action: 'payment_code.issue', priority: 10, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' }], { who: { actor: 'usr_admin' } });
      } finally {
        await gw.close();
      }
      const again = startDemo(env);
      try {
        await waitFor(again, 'Ctrl-C stops both');
        assert.match(again.stderr(), /stored by usr_admin, so the demo set is not applied over it/);
        const password = (JSON.parse(readFileSync(join(dataDir, 'demo-credentials.json'), 'utf8')) as Record<string, string>).demo as string;
        assert.ok(again.stderr().includes(`demo / ${password}`), 'the same demo user, with the same password');
        const res = await fetch(`http://127.0.0.1:${pPort}/readyz`);
        assert.equal(res.status, 200);
      } finally {
        again.child.kill('SIGTERM');
        await again.exited;
      }
    });
  });
}

describe('the demo refuses production mode', () => {
  it('exits 2 and points at stepgate serve', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'stepgate-demo-prod-'));
    try {
      const demo = startDemo({ STEPGATE_MODE: 'production', STEPGATE_MASTER_KEY: randomBytes(32).toString('base64'), STEPGATE_PUBLIC_URL: 'https://mfa.example', STEPGATE_DATA_DIR: dataDir });
      const [code] = await demo.exited;
      assert.equal(code, 2);
      assert.match(demo.stderr(), /development mode only.*stepgate serve/);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
