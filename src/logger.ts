import { pino, type Logger } from 'pino';

/**
 * Paths redacted at every log level. Codes, passwords, seeds, secrets and tokens must never
 * reach a log; the list is broad on purpose (any nesting depth we log at).
 */
export const REDACT_PATHS = [
  'password',
  'newPassword',
  'currentPassword',
  'code',
  'secret',
  'seed',
  'token',
  'ticket',
  'masterKey',
  'client_secret',
  'step_up_token',
  'authorization',
  'cookie',
  '*.password',
  '*.newPassword',
  '*.currentPassword',
  '*.code',
  '*.secret',
  '*.seed',
  '*.token',
  '*.ticket',
  '*.masterKey',
  '*.client_secret',
  '*.step_up_token',
  '*.authorization',
  '*.cookie',
  // SMS provider credentials, flat and where they sit in the configuration.
  'authToken',
  'accessKeySecret',
  '*.authToken',
  '*.accessKeySecret',
  'sms.twilio.authToken',
  'sms.aliyun.accessKeySecret',
  'sms.webhook.secret',
  'config.sms.twilio.authToken',
  'config.sms.aliyun.accessKeySecret',
  'config.sms.webhook.secret',
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
];

export type { Logger };

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'stepgate' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}
