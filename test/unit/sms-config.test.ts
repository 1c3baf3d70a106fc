import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config/load-config.ts';
import { configuredSmsProvider } from '../../src/sms/create-sms-sender.ts';

const KEY = Buffer.alloc(32, 7).toString('base64');
const PROD = { STEPGATE_MODE: 'production', STEPGATE_MASTER_KEY: KEY, STEPGATE_PUBLIC_URL: 'https://mfa.example.com' };

function errorKey(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.key;
  }
  assert.fail('expected a ConfigError');
}

describe('SMS configuration', () => {
  it('defaults: outbox in development, no provider in production; codes 5 min, 5 attempts, 60 s cooldown, CN only', () => {
    const dev = loadConfig({ env: {} });
    assert.equal(configuredSmsProvider(dev), 'outbox');
    assert.equal(dev.sms.codeTtlSeconds, 300);
    assert.equal(dev.sms.maxAttempts, 5);
    assert.equal(dev.sms.resendCooldownSeconds, 60);
    assert.deepEqual(dev.sms.allowedRegions, ['CN']);
    assert.equal(configuredSmsProvider(loadConfig({ env: PROD })), undefined);
  });

  it('production refuses the outbox, and a webhook over http', () => {
    assert.equal(errorKey(() => loadConfig({ env: { ...PROD, STEPGATE_SMS_PROVIDER: 'outbox' } })), 'sms.provider');
    const secret = 'w'.repeat(40);
    assert.equal(errorKey(() => loadConfig({ env: { ...PROD, STEPGATE_SMS_PROVIDER: 'webhook', STEPGATE_SMS_WEBHOOK_SECRET: secret }, overrides: { sms: { webhook: { url: 'http://sms.internal/send' } } } })), 'sms.webhook.url');
    const ok = loadConfig({ env: { ...PROD, STEPGATE_SMS_PROVIDER: 'webhook', STEPGATE_SMS_WEBHOOK_SECRET: secret }, overrides: { sms: { webhook: { url: 'https://sms.internal/send' } } } });
    assert.equal(configuredSmsProvider(ok), 'webhook');
  });

  it('a chosen provider must have its credentials (from the environment or a file), named by key', () => {
    assert.equal(errorKey(() => loadConfig({ env: { STEPGATE_SMS_PROVIDER: 'twilio' } })), 'sms.twilio.accountSid');
    assert.equal(errorKey(() => loadConfig({ env: { STEPGATE_SMS_PROVIDER: 'twilio', STEPGATE_SMS_TWILIO_ACCOUNT_SID: 'AC1' } })), 'sms.twilio.authToken');
    assert.equal(errorKey(() => loadConfig({ env: { STEPGATE_SMS_PROVIDER: 'twilio', STEPGATE_SMS_TWILIO_ACCOUNT_SID: 'AC1', STEPGATE_SMS_TWILIO_AUTH_TOKEN: 't' } })), 'sms.twilio.from');
    const tw = loadConfig({ env: { STEPGATE_SMS_PROVIDER: 'twilio', STEPGATE_SMS_TWILIO_ACCOUNT_SID: 'AC1', STEPGATE_SMS_TWILIO_AUTH_TOKEN: 'tok' }, overrides: { sms: { twilio: { messagingServiceSid: 'MG1' } } } });
    assert.equal(tw.sms.twilio.authToken, 'tok');
    assert.equal(errorKey(() => loadConfig({ env: { STEPGATE_SMS_PROVIDER: 'aliyun', STEPGATE_SMS_ALIYUN_ACCESS_KEY_ID: 'LTAI', STEPGATE_SMS_ALIYUN_ACCESS_KEY_SECRET: 's' } })), 'sms.aliyun.signName');
    assert.equal(errorKey(() => loadConfig({ env: { STEPGATE_SMS_PROVIDER: 'aliyun', STEPGATE_SMS_ALIYUN_ACCESS_KEY_ID: 'LTAI', STEPGATE_SMS_ALIYUN_ACCESS_KEY_SECRET: 's' }, overrides: { sms: { aliyun: { signName: 'S', templateCodes: { en: 'SMS_1', 'zh-CN': 'SMS_2' }, templateParams: ['summary'] } } } })), 'sms.aliyun.templateParams');
    assert.equal(errorKey(() => loadConfig({ env: { STEPGATE_SMS_PROVIDER: 'webhook', STEPGATE_SMS_WEBHOOK_SECRET: 'short' }, overrides: { sms: { webhook: { url: 'http://127.0.0.1:9/x' } } } })), 'sms.webhook.secret');
  });

  it('bounds: codes live at most 10 minutes, at most 5 attempts, regions are ISO codes', () => {
    assert.equal(errorKey(() => loadConfig({ env: {}, overrides: { sms: { codeTtlSeconds: 601 } } })), 'sms.codeTtlSeconds');
    assert.equal(errorKey(() => loadConfig({ env: {}, overrides: { sms: { maxAttempts: 6 } } })), 'sms.maxAttempts');
    assert.equal(errorKey(() => loadConfig({ env: {}, overrides: { sms: { allowedRegions: ['China'] } } })), 'sms.allowedRegions.0');
    assert.equal(errorKey(() => loadConfig({ env: {}, overrides: { sms: { caps: { countryCodeOverrides: { '+86': { hour: 1, day: 1 } } } } } })), 'sms.caps.countryCodeOverrides.+86');
    assert.equal(errorKey(() => loadConfig({ env: {}, overrides: { sms: { brand: '【x】' } } })), 'sms.brand');
  });
});
