/**
 * The one interface every SMS provider implements (DESIGN.md §2, `sms_otp`). A sender only
 * delivers: what may be sent (allow-list, budgets), what the text says and what is stored
 * are decided before it is called (src/flows/deliver-sms.ts).
 */

export type SmsProviderName = 'outbox' | 'twilio' | 'aliyun' | 'webhook';
export type SmsLocale = 'en' | 'zh-CN';
export type SmsPurpose = 'stepup' | 'enrolment';

/** Template variables, for providers that only send pre-approved templates (Aliyun). */
export interface SmsVariables {
  /** The 6-digit code. */
  code: string;
  /** What the code approves, e.g. "向 shop-42 支付 120.00 CNY". */
  summary: string;
  /** Validity in whole minutes. */
  minutes: string;
}

export interface SmsMessage {
  /** Our id for this message; not secret. Passed on where the provider takes one (Aliyun OutId, webhook id). */
  id: string;
  /** Destination in E.164 (+8613800138000). */
  to: string;
  locale: SmsLocale;
  purpose: SmsPurpose;
  /** The whole text, for providers that send free text (outbox, Twilio, webhook). */
  text: string;
  variables: SmsVariables;
  /** How long the code is valid: a provider that can drop a late message uses it (Twilio ValidityPeriod). */
  validitySeconds: number;
}

export interface SmsSendResult {
  /** The provider's id for the message (Twilio SID, Aliyun BizId…), for support and audit. */
  providerMessageId: string | null;
}

/**
 * Why a send failed. `timeout`: no answer in time (the message may still arrive; the code
 * was never stored, so it is useless). `network`: no connection. `http`: the provider
 * answered with an error status. `rejected`: the provider answered but refused the message.
 */
export type SmsFailureKind = 'timeout' | 'network' | 'http' | 'rejected';

/**
 * A failed send. The message never contains credentials, the code or the text: only the
 * kind, the HTTP status and the provider's own short error code.
 */
export class SmsSendError extends Error {
  readonly kind: SmsFailureKind;
  readonly httpStatus: number | undefined;
  readonly providerCode: string | undefined;

  constructor(kind: SmsFailureKind, options: { httpStatus?: number; providerCode?: string } = {}) {
    const code = options.providerCode === undefined ? undefined : sanitiseProviderCode(options.providerCode);
    super(`sms send failed: ${kind}${options.httpStatus === undefined ? '' : ` (HTTP ${options.httpStatus})`}${code === undefined ? '' : ` ${code}`}`);
    this.name = 'SmsSendError';
    this.kind = kind;
    this.httpStatus = options.httpStatus;
    this.providerCode = code;
  }
}

/** Provider error codes are logged and audited: keep them short and printable, whatever the provider sent. */
function sanitiseProviderCode(code: string): string {
  return code.replace(/[^A-Za-z0-9_.:-]/g, '').slice(0, 64);
}

export interface SmsSender {
  readonly provider: SmsProviderName;
  /** Resolves when the provider accepted the message; throws SmsSendError otherwise. */
  send(message: SmsMessage): Promise<SmsSendResult>;
}
