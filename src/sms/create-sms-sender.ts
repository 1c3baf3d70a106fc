import type { Clock } from '../clock.ts';
import type { Config } from '../config/schema.ts';
import type { Db } from '../store/database.ts';
import { createAliyunSender } from './aliyun-sender.ts';
import { createOutboxSender } from './outbox-sender.ts';
import type { SmsProviderName, SmsSender } from './sms-sender.ts';
import { createTwilioSender } from './twilio-sender.ts';
import { createWebhookSender } from './webhook-sender.ts';

/** The provider `sms.provider` selects; empty means outbox in development and none in production. */
export function configuredSmsProvider(config: Pick<Config, 'mode' | 'sms'>): SmsProviderName | undefined {
  if (config.sms.provider !== '') return config.sms.provider;
  return config.mode === 'development' ? 'outbox' : undefined;
}

/**
 * Builds the configured sender, or undefined when SMS is off (production without a
 * provider). The configuration was checked at load time (src/config/load-config.ts), so
 * every required credential is present here.
 */
export function createSmsSender(config: Pick<Config, 'mode' | 'sms'>, deps: { db: Db; clock: Clock }): SmsSender | undefined {
  const { sms } = config;
  const timeoutMs = sms.sendTimeoutSeconds * 1000;
  switch (configuredSmsProvider(config)) {
    case 'outbox':
      return createOutboxSender(deps);
    case 'twilio':
      return createTwilioSender({ ...sms.twilio, timeoutMs });
    case 'aliyun':
      return createAliyunSender({ ...sms.aliyun, timeoutMs, clock: deps.clock });
    case 'webhook':
      return createWebhookSender({ ...sms.webhook, timeoutMs, clock: deps.clock });
    case undefined:
      return undefined;
  }
}
