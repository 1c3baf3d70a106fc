import { mixedScripts } from '../verifier/display-text.ts';
import type { SmsLocale, SmsPurpose } from './sms-sender.ts';

/**
 * The SMS texts, in the user's language. A code is never sent alone: the text says what it
 * approves (amount and payee for payments — PSD2 dynamic linking), how long it is valid and
 * not to share it, so a user asked to read a code out to a "bank employee" can see what it
 * would authorise. Kept here rather than in views/i18n because factor modules and flows must
 * not depend on the page layer; providers with approved templates (Aliyun) use the summary
 * as a template variable instead.
 */

export interface Approval {
  action: string;
  context: Record<string, unknown>;
  bindingMessage: string | null;
}

const SUMMARY_MAX = 60;
const PAYEE_MAX = 24;

/** Untrusted text from a relying service's request: no control or bidi-override characters, one line, bounded. */
export function sanitiseForSms(value: string, max: number): string {
  const clean = value
    .replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu, ' ')
    .replace(/\s+/g, ' ')
    .trim();
  const chars = [...clean];
  return chars.length <= max ? clean : `${chars.slice(0, max - 1).join('')}…`;
}

const SCRIPT_NAMES = {
  Latin: { en: 'Latin', 'zh-CN': '拉丁' },
  Cyrillic: { en: 'Cyrillic', 'zh-CN': '西里尔' },
  Greek: { en: 'Greek', 'zh-CN': '希腊' },
} as const;

const ACTIONS: Record<string, Record<SmsLocale, string>> = {
  'payment_code.issue': { en: 'issuing a payment code', 'zh-CN': '生成付款码' },
  'payment_code.offline_seed': { en: 'enabling offline payment codes', 'zh-CN': '开通离线付款码' },
};

function text(value: unknown): string | undefined {
  return typeof value === 'string' && value.trim() !== '' ? value : undefined;
}

/** One line saying what the code approves. */
export function approvalSummary(locale: SmsLocale, approval: Approval): string {
  const amount = text(approval.context.amount);
  const currency = text(approval.context.currency);
  const payee = text(approval.context.payee);
  if (amount !== undefined && /^-?\d+(\.\d+)?$/.test(amount)) {
    const money = sanitiseForSms(currency === undefined ? amount : `${amount} ${currency}`, 32);
    const to = payee === undefined ? undefined : sanitiseForSms(payee, PAYEE_MAX);
    // A text message cannot highlight a letter: a payee mixing Latin, Cyrillic or Greek
    // letters ("pаypal") is said to, in words, right after the name.
    const mixed = payee === undefined ? undefined : mixedScripts(payee);
    const warning = mixed === undefined ? '' : locale === 'zh-CN' ? `（注意：名称混用${mixed.scripts.map((s) => SCRIPT_NAMES[s]['zh-CN']).join('和')}字母）` : ` (careful: the name mixes ${mixed.scripts.map((s) => SCRIPT_NAMES[s].en).join(' and ')} letters)`;
    if (locale === 'zh-CN') return to === undefined ? `支付 ${money}` : `向 ${to}${warning} 支付 ${money}`;
    return to === undefined ? `a payment of ${money}` : `a payment of ${money} to ${to}${warning}`;
  }
  const binding = text(approval.bindingMessage);
  if (binding !== undefined) return sanitiseForSms(binding, SUMMARY_MAX);
  return ACTIONS[approval.action]?.[locale] ?? sanitiseForSms(approval.action, SUMMARY_MAX);
}

export function enrolmentSummary(locale: SmsLocale): string {
  return locale === 'zh-CN' ? '绑定此手机号' : 'adding this phone to your account';
}

export interface SmsTextInput {
  /** Shown first: the service name users recognise (config `sms.brand`). */
  brand: string;
  locale: SmsLocale;
  purpose: SmsPurpose;
  code: string;
  summary: string;
  minutes: number;
}

export function renderSmsText(input: SmsTextInput): string {
  const { brand, code, summary, minutes } = input;
  if (input.locale === 'zh-CN') {
    return input.purpose === 'enrolment'
      ? `【${brand}】验证码 ${code}，用于${summary}，${minutes}分钟内有效。如非本人操作，请忽略本短信。`
      : `【${brand}】验证码 ${code}，用于确认${summary}，${minutes}分钟内有效。请勿告诉任何人，我们不会向您索取。`;
  }
  return input.purpose === 'enrolment'
    ? `${brand}: code ${code} confirms ${summary}. Valid for ${minutes} min. If this was not you, ignore this message.`
    : `${brand}: code ${code} approves ${summary}. Valid for ${minutes} min. Never share it; we will never ask for it.`;
}
