import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { type Config, configSchema } from './schema.ts';

/** A configuration problem: printed as one line naming the key, then exit 2. */
export class ConfigError extends Error {
  readonly key: string;
  constructor(key: string, reason: string) {
    super(`config: ${key}: ${reason}`);
    this.name = 'ConfigError';
    this.key = key;
  }
}

export const DEFAULT_CONFIG_FILE = fileURLToPath(new URL('../../config/default.yaml', import.meta.url));

/** Environment variables that are part of the public contract, and where each goes. */
const ENV_KEYS: Record<string, { path: string[]; type: 'string' | 'int' }> = {
  STEPGATE_MODE: { path: ['mode'], type: 'string' },
  STEPGATE_HTTP_PORT: { path: ['http', 'port'], type: 'int' },
  STEPGATE_HTTP_HOST: { path: ['http', 'host'], type: 'string' },
  STEPGATE_PUBLIC_URL: { path: ['http', 'publicUrl'], type: 'string' },
  STEPGATE_DATA_DIR: { path: ['dataDir'], type: 'string' },
  STEPGATE_DATABASE_URL: { path: ['database', 'url'], type: 'string' },
  STEPGATE_DATABASE_SCHEMA: { path: ['database', 'schema'], type: 'string' },
  STEPGATE_MASTER_KEY: { path: ['secrets', 'masterKey'], type: 'string' },
  STEPGATE_LOG_LEVEL: { path: ['log', 'level'], type: 'string' },
  STEPGATE_PASSWORD_MAX_CONCURRENT_HASHES: { path: ['password', 'maxConcurrentHashes'], type: 'int' },
  STEPGATE_SMS_PROVIDER: { path: ['sms', 'provider'], type: 'string' },
  STEPGATE_SMS_TWILIO_ACCOUNT_SID: { path: ['sms', 'twilio', 'accountSid'], type: 'string' },
  STEPGATE_SMS_TWILIO_AUTH_TOKEN: { path: ['sms', 'twilio', 'authToken'], type: 'string' },
  STEPGATE_SMS_ALIYUN_ACCESS_KEY_ID: { path: ['sms', 'aliyun', 'accessKeyId'], type: 'string' },
  STEPGATE_SMS_ALIYUN_ACCESS_KEY_SECRET: { path: ['sms', 'aliyun', 'accessKeySecret'], type: 'string' },
  STEPGATE_SMS_WEBHOOK_SECRET: { path: ['sms', 'webhook', 'secret'], type: 'string' },
  STEPGATE_NOTIFICATIONS_WEBHOOK_URL: { path: ['notifications', 'webhook', 'url'], type: 'string' },
  STEPGATE_NOTIFICATIONS_WEBHOOK_SECRET: { path: ['notifications', 'webhook', 'secret'], type: 'string' },
};

/**
 * STEPGATE_* names other components own: the test harness (STEPGATE_TEST_STRICT,
 * STEPGATE_TEST_DATABASE_URL…), the benchmark (STEPGATE_BENCH_…) and the reference
 * payment-code service, which reads its own STEPGATE_PAYMENT_CODE_* settings. Any other
 * unknown STEPGATE_* name is a typo and stops the start (docs/configuration.md lists them).
 */
export const FOREIGN_ENV_PREFIXES: readonly string[] = ['STEPGATE_TEST_', 'STEPGATE_BENCH_', 'STEPGATE_PAYMENT_CODE_'];

/** The environment names the gateway reads (docs/configuration.md). */
export function gatewayEnvNames(): string[] {
  return Object.keys(ENV_KEYS);
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i += 1) {
    let diagonal = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= b.length; j += 1) {
      const above = row[j] as number;
      row[j] = Math.min(above + 1, (row[j - 1] as number) + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length] as number;
}

function refuseUnknownEnv(env: NodeJS.ProcessEnv): void {
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith('STEPGATE_') || value === undefined || value === '') continue;
    if (name in ENV_KEYS || FOREIGN_ENV_PREFIXES.some((p) => name.startsWith(p))) continue;
    const closest = Object.keys(ENV_KEYS)
      .map((known) => ({ known, d: editDistance(name, known) }))
      .sort((x, y) => x.d - y.d)[0];
    const hint = closest !== undefined && closest.d <= 3 ? `; did you mean ${closest.known}?` : '';
    throw new ConfigError(name, `unknown environment variable${hint} (see docs/configuration.md)`);
  }
}

type Tree = Record<string, unknown>;

function isTree(v: unknown): v is Tree {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function mergeInto(target: Tree, source: Tree): Tree {
  const out: Tree = { ...target };
  for (const [k, v] of Object.entries(source)) {
    const existing = out[k];
    out[k] = isTree(existing) && isTree(v) ? mergeInto(existing, v) : v;
  }
  return out;
}

function readYaml(file: string): Tree {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, `cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let parsed: unknown;
  try {
    parsed = parseYaml(text);
  } catch (err) {
    throw new ConfigError(file, `invalid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  if (parsed === null || parsed === undefined) return {};
  if (!isTree(parsed)) throw new ConfigError(file, 'must be a YAML mapping');
  return parsed;
}

function envOverrides(env: NodeJS.ProcessEnv): Tree {
  refuseUnknownEnv(env);
  let out: Tree = {};
  for (const [name, spec] of Object.entries(ENV_KEYS)) {
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    let value: unknown = raw;
    if (spec.type === 'int') {
      if (!/^\d+$/.test(raw)) throw new ConfigError(spec.path.join('.'), `${name} must be an integer`);
      value = Number(raw);
    }
    let branch: unknown = value;
    for (const key of [...spec.path].reverse()) branch = { [key]: branch };
    out = mergeInto(out, branch as Tree);
  }
  return out;
}

function firstIssue(error: z.ZodError): ConfigError {
  const issue = error.issues[0];
  if (issue === undefined) return new ConfigError('(root)', 'invalid');
  const path = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') {
    const key = [...path, issue.keys[0] ?? '?'].join('.');
    return new ConfigError(key, 'unknown key');
  }
  return new ConfigError(path.join('.') || '(root)', issue.message);
}

/** Cross-field rules: production refuses the development conveniences. */
function checkMode(config: Config): void {
  if (config.mode !== 'production') return;
  if (config.secrets.masterKey === '') {
    throw new ConfigError(
      'secrets.masterKey',
      'production mode requires STEPGATE_MASTER_KEY (a generated development key is refused)',
    );
  }
  if (!config.http.publicUrl.startsWith('https://')) {
    throw new ConfigError('http.publicUrl', 'production mode requires an https:// public URL');
  }
  if (config.sms.provider === 'outbox') {
    throw new ConfigError('sms.provider', 'production mode refuses the outbox provider (codes would never leave the database): choose twilio, aliyun or webhook');
  }
  if (config.sms.provider === 'webhook' && !config.sms.webhook.url.startsWith('https://')) {
    throw new ConfigError('sms.webhook.url', 'production mode requires an https:// webhook URL');
  }
  if (config.notifications.webhook.url !== '' && !config.notifications.webhook.url.startsWith('https://')) {
    throw new ConfigError('notifications.webhook.url', 'production mode requires an https:// webhook URL');
  }
  if (config.http.echoRoute) {
    throw new ConfigError('http.echoRoute', 'production mode refuses the benchmark echo route (POST /v1/echo answers any JSON body to anyone): set it to false');
  }
}

/** A notification webhook needs its secret, so an unsigned (or guessable) notification is never sent. */
function checkNotifications(config: Config): void {
  const { webhook } = config.notifications;
  if (webhook.url !== '' && webhook.secret.length < 32) {
    throw new ConfigError('notifications.webhook.secret', 'must be at least 32 characters (openssl rand -base64 32) when notifications.webhook.url is set');
  }
}

/** The chosen SMS provider must have what it needs to send, so a typo fails at start-up, not at the first code. */
function checkSmsProvider(config: Config): void {
  const { sms } = config;
  const need = (key: string, value: string) => {
    if (value === '') throw new ConfigError(`sms.${key}`, `required for sms.provider ${sms.provider}`);
  };
  if (sms.provider === 'twilio') {
    need('twilio.accountSid', sms.twilio.accountSid);
    need('twilio.authToken', sms.twilio.authToken);
    if (sms.twilio.from === '' && sms.twilio.messagingServiceSid === '') {
      throw new ConfigError('sms.twilio.from', 'set twilio.from or twilio.messagingServiceSid');
    }
  } else if (sms.provider === 'aliyun') {
    need('aliyun.accessKeyId', sms.aliyun.accessKeyId);
    need('aliyun.accessKeySecret', sms.aliyun.accessKeySecret);
    need('aliyun.signName', sms.aliyun.signName);
    need('aliyun.templateCodes.en', sms.aliyun.templateCodes.en);
    need('aliyun.templateCodes.zh-CN', sms.aliyun.templateCodes['zh-CN']);
    if (!sms.aliyun.templateParams.includes('code')) throw new ConfigError('sms.aliyun.templateParams', 'must include code');
  } else if (sms.provider === 'webhook') {
    need('webhook.url', sms.webhook.url);
    if (sms.webhook.secret.length < 32) throw new ConfigError('sms.webhook.secret', 'must be at least 32 characters (openssl rand -base64 32)');
  }
}

export interface LoadConfigOptions {
  file?: string | undefined;
  env?: NodeJS.ProcessEnv;
  /** Programmatic overrides (tests), merged last. */
  overrides?: Tree;
}

export function loadConfig(options: LoadConfigOptions = {}): Config {
  let tree = readYaml(DEFAULT_CONFIG_FILE);
  if (options.file !== undefined) tree = mergeInto(tree, readYaml(options.file));
  tree = mergeInto(tree, envOverrides(options.env ?? process.env));
  if (options.overrides !== undefined) tree = mergeInto(tree, options.overrides);
  const result = configSchema.safeParse(tree);
  if (!result.success) throw firstIssue(result.error);
  const config = result.data;
  // Development convenience: links and the issuer follow the port when no URL is set.
  if (config.http.publicUrl === '') config.http.publicUrl = `http://localhost:${config.http.port}`;
  if (config.secrets.masterKey !== '') {
    const key = Buffer.from(config.secrets.masterKey, 'base64');
    if (key.length !== 32 || key.toString('base64') !== config.secrets.masterKey.trim()) {
      throw new ConfigError('secrets.masterKey', 'must be the base64 of exactly 32 bytes');
    }
  }
  checkSmsProvider(config);
  checkNotifications(config);
  checkMode(config);
  return config;
}
