import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config/load-config.ts';

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
