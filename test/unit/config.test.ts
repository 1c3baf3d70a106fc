import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config/load-config.ts';
import { maskSecrets } from '../../src/config/mask-secrets.ts';

const KEY = Buffer.alloc(32, 7).toString('base64');

function configFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'stepgate-config-'));
  const file = join(dir, 'c.yaml');
  writeFileSync(file, text);
  return file;
}

function errorKey(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err.key;
  }
  assert.fail('expected a ConfigError');
}

describe('configuration', () => {
  it('loads the documented defaults', () => {
    const c = loadConfig({ env: {} });
    assert.equal(c.mode, 'development');
    assert.equal(c.http.port, 8080);
    assert.equal(c.database.url, '');
    assert.equal(c.password.argon2.memoryKiB, 19456);
    assert.equal(c.http.publicUrl, 'http://localhost:8080');
  });

  it('derives the development public URL from the port unless one is set', () => {
    assert.equal(loadConfig({ env: { STEPGATE_HTTP_PORT: '18080' } }).http.publicUrl, 'http://localhost:18080');
    assert.equal(loadConfig({ env: { STEPGATE_HTTP_PORT: '18080', STEPGATE_PUBLIC_URL: 'http://gw.test:9' } }).http.publicUrl, 'http://gw.test:9');
    // Production never falls back to it: an unset URL is refused as not https.
    assert.equal(errorKey(() => loadConfig({ env: { STEPGATE_MODE: 'production', STEPGATE_MASTER_KEY: KEY } })), 'http.publicUrl');
  });

  it('applies the public STEPGATE_* environment names', () => {
    const c = loadConfig({
      env: {
        STEPGATE_HTTP_PORT: '9090',
        STEPGATE_DATA_DIR: '/var/lib/stepgate',
        STEPGATE_DATABASE_URL: 'postgres://u@db/stepgate',
        STEPGATE_MASTER_KEY: KEY,
        STEPGATE_MODE: 'production',
        STEPGATE_PUBLIC_URL: 'https://mfa.example.com',
      },
    });
    assert.equal(c.http.port, 9090);
    assert.equal(c.dataDir, '/var/lib/stepgate');
    assert.equal(c.database.url, 'postgres://u@db/stepgate');
    assert.equal(c.mode, 'production');
    assert.equal(c.http.publicUrl, 'https://mfa.example.com');
  });

  it('merges a --config file over the defaults', () => {
    const c = loadConfig({ env: {}, file: configFile('http:\n  port: 7000\nlogin:\n  maxFailures: 5\n') });
    assert.equal(c.http.port, 7000);
    assert.equal(c.login.maxFailures, 5);
    assert.equal(c.login.lockSeconds, 900);
  });

  it('names an unknown key', () => {
    assert.equal(errorKey(() => loadConfig({ env: {}, file: configFile('http:\n  portt: 1\n') })), 'http.portt');
    assert.equal(errorKey(() => loadConfig({ env: {}, file: configFile('bogus: 1\n') })), 'bogus');
  });

  it('names an invalid value', () => {
    assert.equal(errorKey(() => loadConfig({ env: {}, file: configFile('http:\n  port: "eighty"\n') })), 'http.port');
    assert.equal(errorKey(() => loadConfig({ env: { STEPGATE_HTTP_PORT: 'x' } })), 'http.port');
    assert.equal(errorKey(() => loadConfig({ env: {}, file: configFile('password:\n  minLength: 6\n') })), 'password.minLength');
    assert.equal(errorKey(() => loadConfig({ env: { STEPGATE_MASTER_KEY: 'c2hvcnQ=' } })), 'secrets.masterKey');
    assert.equal(errorKey(() => loadConfig({ env: { STEPGATE_DATABASE_URL: 'mysql://x' } })), 'database.url');
  });

  it('production refuses development defaults', () => {
    assert.equal(errorKey(() => loadConfig({ env: { STEPGATE_MODE: 'production', STEPGATE_PUBLIC_URL: 'https://a.example' } })), 'secrets.masterKey');
    assert.equal(errorKey(() => loadConfig({ env: { STEPGATE_MODE: 'production', STEPGATE_MASTER_KEY: KEY } })), 'http.publicUrl');
  });

  it('production refuses the benchmark echo route, naming the setting (development keeps it for the bench)', () => {
    const production = { STEPGATE_MODE: 'production', STEPGATE_MASTER_KEY: KEY, STEPGATE_PUBLIC_URL: 'https://a.example' };
    assert.equal(loadConfig({ env: production }).http.echoRoute, false);
    assert.equal(errorKey(() => loadConfig({ env: production, overrides: { http: { echoRoute: true } } })), 'http.echoRoute');
    assert.equal(loadConfig({ env: {}, overrides: { http: { echoRoute: true } } }).http.echoRoute, true);
    const file = configFile('http:\n  echoRoute: true\n');
    const r = spawnSync(process.execPath, ['bin/stepgate.js', 'config', 'check', '--config', file], { encoding: 'utf8', env: { ...process.env, ...production } });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr.trim(), /^config: http\.echoRoute: production mode refuses the benchmark echo route/);
  });

  it('the CLI prints one line naming the key and exits 2', () => {
    const file = configFile('http:\n  portt: 1\n');
    const r = spawnSync(process.execPath, ['bin/stepgate.js', 'config', 'check', '--config', file], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.equal(r.stderr.trim(), 'config: http.portt: unknown key');
  });

  it('every CLI command answers --help', () => {
    const r = spawnSync(process.execPath, ['bin/stepgate.js', 'migrate', '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0);
    assert.match(r.stdout, /Usage: stepgate migrate/);
  });
});

describe('unknown STEPGATE_* environment variables', () => {
  it('a misspelled name stops the start with one line naming it and the likely intended one', () => {
    try {
      loadConfig({ env: { STEPGATE_HTTP_PROT: '9000' } });
      assert.fail('expected a ConfigError');
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.key, 'STEPGATE_HTTP_PROT');
      assert.match(err.message, /^config: STEPGATE_HTTP_PROT: unknown environment variable; did you mean STEPGATE_HTTP_PORT\?/);
    }
    assert.equal(errorKey(() => loadConfig({ env: { STEPGATE_SOMETHING_ELSE: 'x' } })), 'STEPGATE_SOMETHING_ELSE');
    const r = spawnSync(process.execPath, ['bin/stepgate.js', 'config', 'check'], { encoding: 'utf8', env: { ...process.env, STEPGATE_MASTERKEY: KEY } });
    assert.equal(r.status, 2);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /^config: STEPGATE_MASTERKEY: unknown environment variable; did you mean STEPGATE_MASTER_KEY\?/);
    assert.ok(!r.stderr.includes(KEY), 'the value is not echoed');
  });

  it('names owned by the test harness and the payment-code service, and empty variables, are left alone', () => {
    const c = loadConfig({ env: { STEPGATE_TEST_STRICT: '1', STEPGATE_TEST_DATABASE_URL: 'postgres://x', STEPGATE_PAYMENT_CODE_HTTP_PORT: '9', STEPGATE_TYPO: '', STEPGATE_HTTP_PORT: '8181' } });
    assert.equal(c.http.port, 8181);
  });
});

describe('config check masking', () => {
  it('masks by key name and URL userinfo, for options that do not exist yet too', () => {
    const masked = maskSecrets({
      database: { url: 'postgres://stepgate:db-pass@db/x', schema: 'public' },
      secrets: { masterKey: KEY },
      sms: {
        provider: 'twilio',
        twilio: { accountSid: 'AC123', authToken: 'tw-token' },
        aliyun: { accessKeyId: 'LTAI', accessKeySecret: 'ali-secret' },
        webhook: { url: 'https://hook:hook-pass@sms.example/send', secret: 'wh-secret', signingKey: 'k' },
      },
      stepup: { keyRefreshSeconds: 5, signingAlg: 'ES256' },
      policies: { seedFile: 'config/policies.demo.yaml' },
      empty: { password: '' },
    }) as Record<string, Record<string, unknown>>;
    const sms = masked.sms as Record<string, Record<string, unknown>>;
    const text = JSON.stringify(masked);
    for (const secret of ['db-pass', KEY, 'tw-token', 'ali-secret', 'hook-pass', 'wh-secret']) assert.ok(!text.includes(secret), secret);
    assert.equal(masked.database?.url, 'postgres://stepgate:***@db/x');
    assert.equal(sms.webhook?.url, 'https://hook:***@sms.example/send');
    assert.equal(sms.twilio?.accountSid, 'AC123', 'identifiers stay readable');
    assert.equal(sms.aliyun?.accessKeyId, 'LTAI');
    assert.equal(masked.stepup?.keyRefreshSeconds, 5, 'numbers are never secrets');
    assert.equal(masked.policies?.seedFile, 'config/policies.demo.yaml');
    assert.equal(masked.empty?.password, '', 'an unset secret shows as unset');
  });
});
