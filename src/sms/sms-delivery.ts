import type { SmsLocale, SmsPurpose, SmsVariables } from './sms-sender.ts';

/**
 * A request to send one code (src/flows/deliver-sms.ts does it: allow-list, budgets,
 * provider, audit). Factor modules receive a `DeliverSms` function, so they never touch
 * storage or the network themselves.
 */
export interface SmsDelivery {
  userId: string;
  /** E.164 destination. */
  to: string;
  locale: SmsLocale;
  purpose: SmsPurpose;
  text: string;
  variables: SmsVariables;
  validitySeconds: number;
  /** Non-secret references for the audit log. */
  ref: { stepupId?: string; factorId?: string };
}

export interface DeliveredSms {
  messageId: string;
  provider: string;
  providerMessageId: string | null;
}

/** Resolves once the provider accepted the message; throws an AppError (400/429/503) when nothing was sent. */
export type DeliverSms = (delivery: SmsDelivery) => Promise<DeliveredSms>;

/** The user's language for what is sent: Chinese for any zh tag, English otherwise. */
export function smsLocaleOf(locale: string): SmsLocale {
  return locale === 'zh' || locale.toLowerCase().startsWith('zh') ? 'zh-CN' : 'en';
}
