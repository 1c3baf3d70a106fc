import { parseJsonObject, postWithTimeout } from './http-post.ts';
import { type SmsMessage, type SmsSender, type SmsSendResult, SmsSendError } from './sms-sender.ts';

export interface TwilioSenderOptions {
  accountSid: string;
  authToken: string;
  /** Sender number (E.164) or alphanumeric id; or empty and messagingServiceSid set. */
  from: string;
  messagingServiceSid: string;
  /** https://api.twilio.com */
  baseUrl: string;
  timeoutMs: number;
}

/**
 * Twilio Programmable Messaging: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`,
 * form-encoded `To`, `From` (or `MessagingServiceSid`), `Body`, with HTTP basic auth
 * AccountSid:AuthToken. `ValidityPeriod` makes Twilio drop a message still queued when the
 * code has expired. Success is 201 with the message `sid`.
 */
export function createTwilioSender(options: TwilioSenderOptions): SmsSender {
  const url = `${options.baseUrl.replace(/\/+$/, '')}/2010-04-01/Accounts/${encodeURIComponent(options.accountSid)}/Messages.json`;
  const authorization = `Basic ${Buffer.from(`${options.accountSid}:${options.authToken}`, 'utf8').toString('base64')}`;
  return {
    provider: 'twilio',
    async send(message: SmsMessage): Promise<SmsSendResult> {
      const form = new URLSearchParams();
      form.set('To', message.to);
      if (options.messagingServiceSid !== '') form.set('MessagingServiceSid', options.messagingServiceSid);
      else form.set('From', options.from);
      form.set('Body', message.text);
      form.set('ValidityPeriod', String(Math.max(1, Math.min(36000, message.validitySeconds))));
      const result = await postWithTimeout(
        url,
        { headers: { authorization, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }, body: form.toString() },
        options.timeoutMs,
      );
      const json = parseJsonObject(result.body);
      if (result.status !== 200 && result.status !== 201) {
        const code = json?.code;
        throw new SmsSendError(result.status >= 500 ? 'http' : 'rejected', { httpStatus: result.status, ...(code === undefined || code === null ? {} : { providerCode: String(code) }) });
      }
      const status = typeof json?.status === 'string' ? json.status : undefined;
      if (status === 'failed' || status === 'undelivered') throw new SmsSendError('rejected', { httpStatus: result.status, providerCode: status });
      return { providerMessageId: typeof json?.sid === 'string' ? json.sid : null };
    },
  };
}
