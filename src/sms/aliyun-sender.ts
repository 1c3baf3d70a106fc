import { randomBytes } from 'node:crypto';
import type { Clock } from '../clock.ts';
import { signAcs3, canonicalQueryString, sha256Hex } from './acs3-signature.ts';
import { parseJsonObject, postWithTimeout } from './http-post.ts';
import { type SmsMessage, type SmsSender, type SmsSendResult, SmsSendError, type SmsVariables } from './sms-sender.ts';

export interface AliyunSenderOptions {
  accessKeyId: string;
  accessKeySecret: string;
  /** https://dysmsapi.aliyuncs.com (or a regional / test endpoint). */
  endpoint: string;
  signName: string;
  templateCodes: { en: string; 'zh-CN': string };
  /** Which variables the templates use; only those are sent (Aliyun rejects unknown ones). */
  templateParams: readonly (keyof SmsVariables)[];
  timeoutMs: number;
  clock: Clock;
}

const ACTION = 'SendSms';
const VERSION = '2017-05-25';
/** Dysmsapi limits each template variable's length; 35 characters is the documented bound. */
export const ALIYUN_VARIABLE_MAX = 35;

function truncate(value: string, max: number): string {
  const chars = [...value];
  return chars.length <= max ? value : `${chars.slice(0, max - 1).join('')}…`;
}

/**
 * Dysmsapi SendSms (RPC style): the parameters travel in the query string of a POST with
 * an empty body, signed with ACS3-HMAC-SHA256. Aliyun sends only approved templates, so the
 * text is the template's; we fill its variables. Success is HTTP 200 with `Code: "OK"`.
 */
export function createAliyunSender(options: AliyunSenderOptions): SmsSender {
  const endpoint = new URL(options.endpoint);
  return {
    provider: 'aliyun',
    async send(message: SmsMessage): Promise<SmsSendResult> {
      const variables: Record<string, string> = {};
      for (const name of options.templateParams) variables[name] = truncate(message.variables[name], ALIYUN_VARIABLE_MAX);
      const query: Record<string, string> = {
        // Dysmsapi takes international numbers as digits with the calling code, no "+".
        PhoneNumbers: message.to.replace(/^\+/, ''),
        SignName: options.signName,
        TemplateCode: options.templateCodes[message.locale],
        TemplateParam: JSON.stringify(variables),
        OutId: message.id,
      };
      const body = '';
      const headers: Record<string, string> = {
        host: endpoint.host,
        'x-acs-action': ACTION,
        'x-acs-version': VERSION,
        'x-acs-date': options.clock.now().toISOString().replace(/\.\d{3}Z$/, 'Z'),
        'x-acs-signature-nonce': randomBytes(16).toString('hex'),
        'x-acs-content-sha256': sha256Hex(body),
        accept: 'application/json',
      };
      const signed = signAcs3({ method: 'POST', canonicalUri: '/', query, headers, body }, options);
      const { host: _host, ...sent } = headers;
      const url = `${endpoint.origin}/?${canonicalQueryString(query)}`;
      const result = await postWithTimeout(url, { headers: { ...sent, authorization: signed.authorization }, body }, options.timeoutMs);
      const json = parseJsonObject(result.body);
      const code = typeof json?.Code === 'string' ? json.Code : undefined;
      if (result.status !== 200) throw new SmsSendError('http', { httpStatus: result.status, ...(code === undefined ? {} : { providerCode: code }) });
      if (code !== 'OK') throw new SmsSendError('rejected', { httpStatus: result.status, providerCode: code ?? 'no_code' });
      return { providerMessageId: typeof json?.BizId === 'string' ? json.BizId : null };
    },
  };
}
