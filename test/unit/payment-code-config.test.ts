import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config/load-config.ts';
import { parseCommandArgs } from '../../src/cli/command.ts';
import { configCheckCommand } from '../../src/cli/config-command.ts';
import { assertRunnable, loadPaymentCodeConfig, PaymentCodeConfigError } from '../../src/payment-code/config.ts';

const dir = mkdtempSync(join(tmpdir(), 'stepgate-pc-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

function refused(fn: () => unknown, key: string): void {
  assert.throws(fn, (err: unknown) => err instanceof PaymentCodeConfigError && err.key === key, key);
}

describe('payment-code service configuration', () => {
  it('defaults from config/default.yaml, derived values filled in', () => {
    const c = loadPaymentCodeConfig({ env: {} });
    assert.equal(c.mode, 'development');
    assert.equal(c.http.port, 8090);
    assert.equal(c.http.publicUrl, 'http://localhost:8090');
    assert.equal(c.dataDir, join('./data', 'payment-code'));
    assert.equal(c.codes.prefix, '18');
    assert.equal(c.codes.ttlSeconds, 60);
    assert.equal(c.offline.seedTtlSeconds, 7 * 86_400);
    assert.equal(c.gateway.url, 'http://localhost:8080');
    assert.equal(c.gateway.issuer, 'http://localhost:8080');
    assert.equal(c.gateway.jwksUri, 'http://localhost:8080/.well-known/jwks.json');
    assert.equal(c.stepUp.issueAcr, 'urn:stepgate:aal2');
    assert.equal(c.stepUp.offlineSeedAcr, 'urn:stepgate:aal3');
    assert.equal(c.database.queryTimeoutMs, 5000);
  });

  it('STEPGATE_PAYMENT_CODE_* and the shared STEPGATE_MODE / STEPGATE_DATA_DIR override it', () => {
    const c = loadPaymentCodeConfig({
      env: {
        STEPGATE_DATA_DIR: '/srv/stepgate',
        STEPGATE_PAYMENT_CODE_HTTP_PORT: '9999',
        STEPGATE_PAYMENT_CODE_GATEWAY_URL: 'http://10.0.0.5:8080/',
        STEPGATE_PAYMENT_CODE_GATEWAY_ISSUER: 'https://mfa.example',
        STEPGATE_PAYMENT_CODE_CLIENT_ID: 'cli_x',
        STEPGATE_PAYMENT_CODE_CODE_PREFIX: '19',
        STEPGATE_PAYMENT_CODE_DEMO_USERS: 'alice=usr_a1, bob=usr_b2,',
        STEPGATE_PAYMENT_CODE_ISSUE_ACR: 'urn:stepgate:aal1',
      },
    });
    assert.equal(c.http.port, 9999);
    assert.equal(c.dataDir, join('/srv/stepgate', 'payment-code'));
    assert.equal(c.gateway.url, 'http://10.0.0.5:8080');
    assert.equal(c.gateway.issuer, 'https://mfa.example');
    assert.equal(c.gateway.jwksUri, 'http://10.0.0.5:8080/.well-known/jwks.json');
    assert.equal(c.codes.prefix, '19');
    assert.deepEqual(c.demo.users, ['alice=usr_a1', 'bob=usr_b2']);
    assert.equal(c.stepUp.issueAcr, 'urn:stepgate:aal1');
    assert.equal(loadPaymentCodeConfig({ env: { STEPGATE_PAYMENT_CODE_DATABASE_QUERY_TIMEOUT_MS: '1500' } }).database.queryTimeoutMs, 1500);
  });

  it('a wrong key or value stops it with one line naming the key', () => {
    refused(() => loadPaymentCodeConfig({ env: {}, file: file('typo.yaml', 'paymentCode:\n  http:\n    portt: 1\n') }), 'paymentCode.http.portt');
    refused(() => loadPaymentCodeConfig({ env: { STEPGATE_PAYMENT_CODE_HTTP_PORT: 'eighty' } }), 'paymentCode.http.port');
    refused(() => loadPaymentCodeConfig({ env: { STEPGATE_PAYMENT_CODE_CODE_PREFIX: '08' } }), 'paymentCode.codes.prefix');
    refused(() => loadPaymentCodeConfig({ env: { STEPGATE_PAYMENT_CODE_MASTER_KEY: 'c2hvcnQ=' } }), 'paymentCode.secrets.masterKey');
    refused(() => loadPaymentCodeConfig({ env: { STEPGATE_PAYMENT_CODE_ISSUE_ACR: 'urn:stepgate:aal9' } }), 'paymentCode.stepUp.issueAcr');
    // No timeout at all (0), or one too short for any statement, is not a setting.
    for (const ms of ['0', '99', '600001', '5s']) refused(() => loadPaymentCodeConfig({ env: { STEPGATE_PAYMENT_CODE_DATABASE_QUERY_TIMEOUT_MS: ms } }), 'paymentCode.database.queryTimeoutMs');
    // The gateway validates the section's shape too, so `stepgate config check` catches it.
    assert.throws(() => loadConfig({ env: {}, file: file('typo2.yaml', 'paymentCode:\n  codes:\n    ttl: 5\n') }), (err: unknown) => err instanceof ConfigError && err.key === 'paymentCode.codes.ttl');
  });

  it('production refuses the development conveniences; the service needs its client registration', () => {
    const key = randomBytes(32).toString('base64');
    refused(() => loadPaymentCodeConfig({ env: { STEPGATE_MODE: 'production' } }), 'paymentCode.secrets.masterKey');
    refused(() => loadPaymentCodeConfig({ env: { STEPGATE_MODE: 'production', STEPGATE_PAYMENT_CODE_MASTER_KEY: key } }), 'paymentCode.http.publicUrl');
    refused(() => loadPaymentCodeConfig({ env: { STEPGATE_MODE: 'production', STEPGATE_PAYMENT_CODE_MASTER_KEY: key, STEPGATE_PAYMENT_CODE_PUBLIC_URL: 'https://pay.example' } }), 'paymentCode.gateway.url');
    const ok = loadPaymentCodeConfig({ env: { STEPGATE_MODE: 'production', STEPGATE_PAYMENT_CODE_MASTER_KEY: key, STEPGATE_PAYMENT_CODE_PUBLIC_URL: 'https://pay.example', STEPGATE_PAYMENT_CODE_GATEWAY_URL: 'https://mfa.example' } });
    assert.equal(ok.mode, 'production');
    refused(() => assertRunnable(ok), 'paymentCode.gateway.clientId');
    refused(() => assertRunnable({ ...ok, gateway: { ...ok.gateway, clientId: 'cli_1' } }), 'paymentCode.gateway.clientSecret');
    refused(() => assertRunnable({ ...ok, gateway: { ...ok.gateway, clientId: 'cli_1', clientAuth: 'private_key_jwt' } }), 'paymentCode.gateway.clientKeyFile');
  });

  it('stepgate config check masks the service’s secrets too', async () => {
    const secret = 'the-client-secret-1234567890';
    const key = randomBytes(32).toString('base64');
    const config = file('secrets.yaml', `paymentCode:\n  secrets:\n    masterKey: "${key}"\n  gateway:\n    clientSecret: "${secret}"\n`);
    const lines: string[] = [];
    await configCheckCommand.run({ ...parseCommandArgs(configCheckCommand, ['--config', config]), out: (l) => lines.push(l) });
    const text = lines.join('\n');
    assert.ok(!text.includes(secret) && !text.includes(key));
    const printed = JSON.parse(text) as { paymentCode: { secrets: { masterKey: string }; gateway: { clientSecret: string } } };
    assert.equal(printed.paymentCode.secrets.masterKey, '***');
    assert.equal(printed.paymentCode.gateway.clientSecret, '***');
  });
});
