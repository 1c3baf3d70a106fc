import { createHmac } from 'node:crypto';
import type { Clock } from '../clock.ts';
import { parseJsonObject, postWithTimeout } from './http-post.ts';
import { type SmsMessage, type SmsSender, type SmsSendResult, SmsSendError } from './sms-sender.ts';

export interface WebhookSenderOptions {
  url: string;
  secret: string;
  timeoutMs: number;
  clock: Clock;
}

export const WEBHOOK_SIGNATURE_HEADER = 'x-stepgate-signature';

/**
 * The signature an in-house gateway checks: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
 * "<t>.<raw body>")>`. The timestamp is inside the MAC so a captured request cannot be
 * replayed later; the receiver rejects a `t` more than a few minutes off and deduplicates
 * by the body's `id`.
 */
export function webhookSignature(secret: string, timestamp: number, body: string): string {
  const mac = createHmac('sha256', secret).update(`${timestamp}.${body}`, 'utf8').digest('hex');
  return `t=${timestamp},v1=${mac}`;
}

/**
 * Generic signed HTTP webhook for in-house SMS gateways: a JSON POST of the message; any
 * 2xx is success, and a JSON answer's `message_id` is kept as the provider id.
 */
export function createWebhookSender(options: WebhookSenderOptions): SmsSender {
  return {
    provider: 'webhook',
    async send(message: SmsMessage): Promise<SmsSendResult> {
      const now = options.clock.now();
      const body = JSON.stringify({
        id: message.id,
        to: message.to,
        text: message.text,
        locale: message.locale,
        purpose: message.purpose,
        variables: message.variables,
        validity_seconds: message.validitySeconds,
        created_at: now.toISOString(),
      });
      const timestamp = Math.floor(now.getTime() / 1000);
      const result = await postWithTimeout(
        options.url,
        { headers: { 'content-type': 'application/json', accept: 'application/json', [WEBHOOK_SIGNATURE_HEADER]: webhookSignature(options.secret, timestamp, body) }, body },
        options.timeoutMs,
      );
      const json = parseJsonObject(result.body);
      if (result.status < 200 || result.status > 299) {
        const code = typeof json?.code === 'string' ? json.code : undefined;
        throw new SmsSendError(result.status >= 500 ? 'http' : 'rejected', { httpStatus: result.status, ...(code === undefined ? {} : { providerCode: code }) });
      }
      return { providerMessageId: typeof json?.message_id === 'string' ? json.message_id.slice(0, 128) : null };
    },
  };
}
