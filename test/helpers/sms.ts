import assert from 'node:assert/strict';
import { newId } from '../../src/crypto/ids.ts';
import { replaceSmsSender } from '../../src/flows/deliver-sms.ts';
import type { Gateway } from '../../src/gateway.ts';
import { maskPhoneNumber } from '../../src/sms/phone-number.ts';
import type { SmsMessage, SmsSender } from '../../src/sms/sms-sender.ts';

/** The messages a capturing sender "sent"; `fail` makes the next sends throw like a provider outage. */
export interface SmsCapture {
  sent: SmsMessage[];
  last(): SmsMessage;
  /** The code of the last message, read from its text (as a user would). */
  lastCode(): string;
  set(next: SmsSender['send'] | undefined): void;
}

/** Replaces the gateway's SMS provider with one that records messages (no network). */
export function captureSms(gw: Gateway): SmsCapture {
  const sent: SmsMessage[] = [];
  let override: SmsSender['send'] | undefined;
  replaceSmsSender(gw, {
    provider: 'outbox',
    async send(message) {
      if (override !== undefined) return override(message);
      sent.push(message);
      return { providerMessageId: message.id };
    },
  });
  return {
    sent,
    last() {
      const m = sent.at(-1);
      assert.ok(m, 'an SMS was sent');
      return m;
    },
    lastCode() {
      const m = this.last();
      const found = /\b(\d{6})\b/.exec(m.text);
      assert.ok(found, `a 6-digit code in: ${m.text}`);
      assert.equal(found[1], m.variables.code);
      return found[1]!;
    },
    set(next) {
      override = next;
    },
  };
}

/** The code in an SMS text. */
export function codeInText(text: string): string {
  const found = /\b(\d{6})\b/.exec(text);
  assert.ok(found, `a 6-digit code in: ${text}`);
  return found[1]!;
}

/** An enrolled (active) phone, written directly: for tests about using it, not enrolling it. */
export async function addPhone(gw: Gateway, userId: string, e164: string, label = 'phone'): Promise<string> {
  const id = newId('fac');
  const now = gw.clock.now().getTime();
  const params = { phone: e164, phoneMasked: maskPhoneNumber(e164), country: e164.startsWith('+86') ? 'CN' : 'XX', callingCode: e164.startsWith('+86') ? '86' : '0' };
  await gw.store.db
    .insertInto('factors')
    .values({ id, user_id: userId, type: 'sms_otp', label, status: 'active', secret_hash: null, secret_sealed: null, params: JSON.stringify(params), counter: 0, failures: 0, locked_until: null, created_at: now, updated_at: now, last_used_at: null })
    .execute();
  return id;
}
