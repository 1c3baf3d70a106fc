import { pino, type Logger } from 'pino';

/** Paths redacted at every level: codes, seeds, tokens, keys and secrets never reach a log. */
export const REDACT_PATHS = [
  'code',
  'codes',
  'seed',
  'secret',
  'token',
  'ticket',
  'apiKey',
  'authorization',
  'cookie',
  'step_up_token',
  'client_secret',
  'device_seed',
  '*.code',
  '*.seed',
  '*.secret',
  '*.token',
  '*.ticket',
  '*.apiKey',
  '*.authorization',
  '*.cookie',
  '*.step_up_token',
  '*.client_secret',
  '*.device_seed',
  'req.headers.authorization',
  'req.headers.cookie',
];

export type { Logger };

export function createPaymentCodeLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'stepgate-payment-code' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}
