import { createHmac, type KeyObject } from 'node:crypto';
import type { Gateway } from '../gateway.ts';
import { AppError } from '../errors/app-error.ts';
import { newId } from '../crypto/ids.ts';
import {
  type DeliveredSms,
  type SmsDelivery,
  chargeSendCaps,
  createSmsSender,
  maskPhoneNumber,
  parseMobileNumber,
  SmsSendError,
  type SmsSender,
} from '../sms/index.ts';

/**
 * Sending one SMS code, whatever it is for (a step-up challenge, a phone enrolment): the
 * region allow-list, the send budgets, the provider call and the audit trail, in that
 * order. Nothing is sent unless the number's region is allowed and every budget had room;
 * a provider failure or timeout is a 503 with Retry-After. The caller stores the code's MAC
 * only after this resolved, so a failed send leaves nothing usable.
 */

export type { DeliveredSms, DeliverSms, SmsDelivery } from '../sms/index.ts';

const senders = new WeakMap<Gateway, { sender: SmsSender | undefined }>();

/** The configured provider of this gateway (built once), or undefined when SMS is off. */
export function smsSenderOf(gw: Gateway): SmsSender | undefined {
  let entry = senders.get(gw);
  if (entry === undefined) {
    entry = { sender: createSmsSender(gw.config, { db: gw.store.db, clock: gw.clock }) };
    senders.set(gw, entry);
  }
  return entry.sender;
}

/** Tests: deliver through this sender instead of the configured one. */
export function replaceSmsSender(gw: Gateway, sender: SmsSender | undefined): void {
  senders.set(gw, { sender });
}

const numberKeys = new WeakMap<Gateway, KeyObject>();

/** The send budgets count numbers by a keyed hash, so the counters table holds no phone numbers. */
function numberKey(gw: Gateway, e164: string): string {
  let key = numberKeys.get(gw);
  if (key === undefined) {
    key = gw.sealer.deriveKey('sms-number-key');
    numberKeys.set(gw, key);
  }
  return createHmac('sha256', key).update(e164, 'utf8').digest('base64url').slice(0, 32);
}

export async function deliverSms(gw: Gateway, delivery: SmsDelivery): Promise<DeliveredSms> {
  const sender = smsSenderOf(gw);
  const { sms } = gw.config;
  const masked = maskPhoneNumber(delivery.to);
  const base = { purpose: delivery.purpose, to: masked, ...delivery.ref };
  if (sender === undefined) throw new AppError('sms_unavailable', { retryAfterSeconds: sms.unavailableRetryAfterSeconds, detail: 'No SMS provider is configured.' });
  const phone = parseMobileNumber(delivery.to, '');
  if (typeof phone === 'string') {
    throw new AppError('phone_invalid', { invalidParams: [{ pointer: '/phone', reason: 'not a valid mobile number' }] });
  }
  if (!sms.allowedRegions.includes(phone.region)) {
    gw.metrics.sms.inc({ provider: sender.provider, outcome: 'refused_region' });
    await gw.audit.append(gw.store.db, { type: 'sms.send_refused', subject: delivery.userId, data: { ...base, region: phone.region, reason: 'region_not_allowed' } });
    throw new AppError('sms_region_not_allowed', { invalidParams: [{ pointer: '/phone', reason: `numbers in ${phone.region} cannot receive codes here` }] });
  }
  const now = gw.clock.now();
  const caps = await chargeSendCaps(gw.store.db, sms.caps, { numberKey: numberKey(gw, phone.e164), userId: delivery.userId, callingCode: phone.callingCode }, now);
  if (!caps.ok) {
    gw.metrics.sms.inc({ provider: sender.provider, outcome: 'refused_limit' });
    await gw.audit.append(gw.store.db, {
      type: 'sms.send_refused',
      subject: delivery.userId,
      data: { ...base, region: phone.region, reason: 'limit', scope: caps.scope, window: caps.window, limit: caps.limit },
    });
    throw new AppError('sms_limit_exceeded', { retryAfterSeconds: caps.retryAfterSeconds, detail: `The ${caps.scope.replace('_', ' ')} SMS budget for this ${caps.window} is used up.` });
  }
  const messageId = newId('sms');
  try {
    const result = await sender.send({
      id: messageId,
      to: phone.e164,
      locale: delivery.locale,
      purpose: delivery.purpose,
      text: delivery.text,
      variables: delivery.variables,
      validitySeconds: delivery.validitySeconds,
    });
    gw.metrics.sms.inc({ provider: sender.provider, outcome: 'sent' });
    await gw.audit.append(gw.store.db, {
      type: 'sms.sent',
      subject: delivery.userId,
      data: { ...base, region: phone.region, provider: sender.provider, messageId, providerMessageId: result.providerMessageId },
    });
    return { messageId, provider: sender.provider, providerMessageId: result.providerMessageId };
  } catch (err) {
    const failure = err instanceof SmsSendError ? { kind: err.kind, httpStatus: err.httpStatus ?? null, providerCode: err.providerCode ?? null } : { kind: 'error', httpStatus: null, providerCode: null };
    // Only the failure's shape is logged and audited: never the text, the code or credentials.
    gw.logger.warn({ provider: sender.provider, messageId, ...failure }, 'sms send failed');
    gw.metrics.sms.inc({ provider: sender.provider, outcome: 'failed' });
    // An unexpected error's message could echo what was being written (the outbox text): its name and code only.
    if (!(err instanceof SmsSendError)) gw.logger.error({ errName: (err as Error | undefined)?.name, errCode: (err as { code?: unknown } | undefined)?.code }, 'unexpected SMS sender error');
    await gw.audit.append(gw.store.db, { type: 'sms.send_failed', subject: delivery.userId, data: { ...base, region: phone.region, provider: sender.provider, messageId, ...failure } });
    throw new AppError('sms_unavailable', { retryAfterSeconds: sms.unavailableRetryAfterSeconds });
  }
}
