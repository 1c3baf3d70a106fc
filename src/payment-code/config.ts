import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { STEPUP_ACR_VALUES } from '../verifier/acr.ts';

/**
 * The payment-code service's configuration: the `paymentCode` section of the same YAML files
 * the gateway reads (config/default.yaml, then `--config FILE`), plus the top-level `mode` and
 * `dataDir`, plus STEPGATE_PAYMENT_CODE_* environment variables. Read by this service alone:
 * it shares the file for convenience, never the gateway's loader (it imports nothing from the
 * gateway). Defaults and the reasons for them are in config/default.yaml.
 */

const positiveInt = z.number().int().positive();
const acr = z.enum(STEPUP_ACR_VALUES);

/** The `paymentCode` section. The gateway's schema embeds it so `stepgate config check` catches typos too. */
export const paymentCodeSectionSchema = z.strictObject({
  http: z.strictObject({
    port: z.number().int().min(0).max(65535),
    host: z.string().min(1),
    publicUrl: z.union([z.literal(''), z.url({ protocol: /^https?$/ })]),
    trustProxyHops: z.number().int().min(0).max(10),
    bodyLimitBytes: z.number().int().min(1024).max(1024 * 1024),
    requestTimeoutSeconds: positiveInt,
    shutdownGraceSeconds: z.number().int().min(0),
  }),
  dataDir: z.string(),
  database: z.strictObject({
    url: z.union([z.literal(''), z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')]),
    schema: z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case SQL identifier'),
    poolMax: z.number().int().min(1).max(200),
    queryTimeoutMs: z.number().int().min(100).max(600_000),
    sqliteBusyTimeoutMs: z.number().int().min(0),
  }),
  secrets: z.strictObject({
    masterKey: z.string(),
  }),
  log: z.strictObject({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  }),
  gateway: z.strictObject({
    url: z.url({ protocol: /^https?$/ }),
    issuer: z.union([z.literal(''), z.url({ protocol: /^https?$/ })]),
    jwksUri: z.union([z.literal(''), z.url({ protocol: /^https?$/ })]),
    allowInsecureHttp: z.boolean(),
    clientId: z.string().max(128),
    clientAuth: z.enum(['client_secret_basic', 'private_key_jwt']),
    clientSecret: z.string().max(512),
    clientKeyFile: z.string(),
    timeoutSeconds: z.number().int().min(1).max(60),
  }),
  stepUp: z.strictObject({
    issueAcr: acr,
    offlineSeedAcr: acr,
    maxAuthAgeSeconds: z.number().int().min(0).max(3600),
    clockToleranceSeconds: z.number().int().min(0).max(60),
  }),
  codes: z.strictObject({
    prefix: z.string().regex(/^[1-9][0-9]$/, 'must be two digits, the first not 0 (e.g. "25")'),
    ttlSeconds: z.number().int().min(10).max(600),
  }),
  offline: z.strictObject({
    periodSeconds: z.number().int().min(10).max(300),
    seedTtlSeconds: z.number().int().min(300).max(30 * 86_400),
    maxCodes: z.number().int().min(1).max(10_000),
    maxFailures: z.number().int().min(1).max(100),
    failureWindowSeconds: z.number().int().min(10).max(86_400),
  }),
  demo: z.strictObject({
    enabled: z.boolean(),
    // `label=usr_…`: what the page shows, and the gateway user id it stands for.
    users: z.array(z.string().regex(/^[^=,]{1,64}=usr_[A-Za-z0-9_-]{1,96}$/, 'must be label=usr_… (a name to show and the gateway user id)')).max(20),
  }),
});

export type PaymentCodeSection = z.infer<typeof paymentCodeSectionSchema>;

export interface PaymentCodeConfig extends PaymentCodeSection {
  mode: 'development' | 'production';
}

/** A configuration problem: one line naming the key, exit 2 (the same contract as the gateway's). */
export class PaymentCodeConfigError extends Error {
  readonly key: string;
  constructor(key: string, reason: string) {
    super(`config: ${key}: ${reason}`);
    this.name = 'PaymentCodeConfigError';
    this.key = key;
  }
}

export const DEFAULT_CONFIG_FILE = fileURLToPath(new URL('../../config/default.yaml', import.meta.url));

/** The public environment contract (docs/payment-codes.md lists it). Paths are inside `paymentCode`. */
const ENV_KEYS: Record<string, { path: string[]; type: 'string' | 'int' | 'list' }> = {
  STEPGATE_PAYMENT_CODE_HTTP_PORT: { path: ['http', 'port'], type: 'int' },
  STEPGATE_PAYMENT_CODE_HTTP_HOST: { path: ['http', 'host'], type: 'string' },
  STEPGATE_PAYMENT_CODE_PUBLIC_URL: { path: ['http', 'publicUrl'], type: 'string' },
  STEPGATE_PAYMENT_CODE_DATA_DIR: { path: ['dataDir'], type: 'string' },
  STEPGATE_PAYMENT_CODE_DATABASE_URL: { path: ['database', 'url'], type: 'string' },
  STEPGATE_PAYMENT_CODE_DATABASE_SCHEMA: { path: ['database', 'schema'], type: 'string' },
  STEPGATE_PAYMENT_CODE_DATABASE_QUERY_TIMEOUT_MS: { path: ['database', 'queryTimeoutMs'], type: 'int' },
  STEPGATE_PAYMENT_CODE_MASTER_KEY: { path: ['secrets', 'masterKey'], type: 'string' },
  STEPGATE_PAYMENT_CODE_LOG_LEVEL: { path: ['log', 'level'], type: 'string' },
  STEPGATE_PAYMENT_CODE_GATEWAY_URL: { path: ['gateway', 'url'], type: 'string' },
  STEPGATE_PAYMENT_CODE_GATEWAY_ISSUER: { path: ['gateway', 'issuer'], type: 'string' },
  STEPGATE_PAYMENT_CODE_GATEWAY_JWKS_URI: { path: ['gateway', 'jwksUri'], type: 'string' },
  STEPGATE_PAYMENT_CODE_CLIENT_ID: { path: ['gateway', 'clientId'], type: 'string' },
  STEPGATE_PAYMENT_CODE_CLIENT_AUTH: { path: ['gateway', 'clientAuth'], type: 'string' },
  STEPGATE_PAYMENT_CODE_CLIENT_SECRET: { path: ['gateway', 'clientSecret'], type: 'string' },
  STEPGATE_PAYMENT_CODE_CLIENT_KEY_FILE: { path: ['gateway', 'clientKeyFile'], type: 'string' },
  STEPGATE_PAYMENT_CODE_ISSUE_ACR: { path: ['stepUp', 'issueAcr'], type: 'string' },
  STEPGATE_PAYMENT_CODE_OFFLINE_SEED_ACR: { path: ['stepUp', 'offlineSeedAcr'], type: 'string' },
  STEPGATE_PAYMENT_CODE_CODE_PREFIX: { path: ['codes', 'prefix'], type: 'string' },
  STEPGATE_PAYMENT_CODE_DEMO_USERS: { path: ['demo', 'users'], type: 'list' },
};

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
    throw new PaymentCodeConfigError(file, `cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let parsed: unknown;
  try {
    parsed = parseYaml(text);
  } catch (err) {
    throw new PaymentCodeConfigError(file, `invalid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  if (parsed === null || parsed === undefined) return {};
  if (!isTree(parsed)) throw new PaymentCodeConfigError(file, 'must be a YAML mapping');
  return parsed;
}

function envOverrides(env: NodeJS.ProcessEnv): Tree {
  let out: Tree = {};
  for (const [name, spec] of Object.entries(ENV_KEYS)) {
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    let value: unknown = raw;
    if (spec.type === 'int') {
      if (!/^\d+$/.test(raw)) throw new PaymentCodeConfigError(`paymentCode.${spec.path.join('.')}`, `${name} must be an integer`);
      value = Number(raw);
    } else if (spec.type === 'list') {
      value = raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
    }
    let branch: unknown = value;
    for (const key of [...spec.path].reverse()) branch = { [key]: branch };
    out = mergeInto(out, branch as Tree);
  }
  return out;
}

function firstIssue(error: z.ZodError, prefix: string): PaymentCodeConfigError {
  const issue = error.issues[0];
  if (issue === undefined) return new PaymentCodeConfigError(prefix, 'invalid');
  const path = [prefix, ...issue.path.map(String)];
  if (issue.code === 'unrecognized_keys') return new PaymentCodeConfigError([...path, issue.keys[0] ?? '?'].join('.'), 'unknown key');
  return new PaymentCodeConfigError(path.join('.'), issue.message);
}

export interface LoadPaymentCodeConfigOptions {
  file?: string | undefined;
  env?: NodeJS.ProcessEnv;
  /** Merged last over the `paymentCode` section (tests). `mode` and `dataDir` may be given at the top. */
  overrides?: Tree & { mode?: 'development' | 'production' };
}

export function loadPaymentCodeConfig(options: LoadPaymentCodeConfigOptions = {}): PaymentCodeConfig {
  const env = options.env ?? process.env;
  let tree = readYaml(DEFAULT_CONFIG_FILE);
  if (options.file !== undefined) tree = mergeInto(tree, readYaml(options.file));
  const { mode: modeOverride, ...sectionOverrides } = options.overrides ?? {};
  const mode = modeOverride ?? (env.STEPGATE_MODE !== undefined && env.STEPGATE_MODE !== '' ? env.STEPGATE_MODE : tree.mode);
  if (mode !== 'development' && mode !== 'production') throw new PaymentCodeConfigError('mode', 'must be development or production');
  const topDataDir = env.STEPGATE_DATA_DIR !== undefined && env.STEPGATE_DATA_DIR !== '' ? env.STEPGATE_DATA_DIR : tree.dataDir;

  let section = isTree(tree.paymentCode) ? tree.paymentCode : {};
  section = mergeInto(section, envOverrides(env));
  section = mergeInto(section, sectionOverrides);
  const result = paymentCodeSectionSchema.safeParse(section);
  if (!result.success) throw firstIssue(result.error, 'paymentCode');
  const config: PaymentCodeConfig = { ...result.data, mode };

  if (config.dataDir === '') config.dataDir = join(typeof topDataDir === 'string' && topDataDir !== '' ? topDataDir : './data', 'payment-code');
  if (config.http.publicUrl === '') config.http.publicUrl = `http://localhost:${config.http.port}`;
  config.http.publicUrl = config.http.publicUrl.replace(/\/+$/, '');
  config.gateway.url = config.gateway.url.replace(/\/+$/, '');
  if (config.gateway.issuer === '') config.gateway.issuer = config.gateway.url;
  config.gateway.issuer = config.gateway.issuer.replace(/\/+$/, '');
  if (config.gateway.jwksUri === '') config.gateway.jwksUri = `${config.gateway.url}/.well-known/jwks.json`;
  if (config.secrets.masterKey !== '') {
    const key = Buffer.from(config.secrets.masterKey, 'base64');
    if (key.length !== 32 || key.toString('base64') !== config.secrets.masterKey.trim()) {
      throw new PaymentCodeConfigError('paymentCode.secrets.masterKey', 'must be the base64 of exactly 32 bytes');
    }
  }
  checkMode(config);
  return config;
}

/** Production refuses the development conveniences; the demo pages never run there. */
function checkMode(config: PaymentCodeConfig): void {
  if (config.mode !== 'production') return;
  if (config.secrets.masterKey === '') {
    throw new PaymentCodeConfigError('paymentCode.secrets.masterKey', 'production mode requires STEPGATE_PAYMENT_CODE_MASTER_KEY (a generated development key is refused)');
  }
  if (!config.http.publicUrl.startsWith('https://')) {
    throw new PaymentCodeConfigError('paymentCode.http.publicUrl', 'production mode requires an https:// public URL (it is the issuer of signed QR codes)');
  }
  if (!config.gateway.url.startsWith('https://') && !config.gateway.allowInsecureHttp) {
    throw new PaymentCodeConfigError('paymentCode.gateway.url', 'production mode requires an https:// gateway URL (or gateway.allowInsecureHttp on a private network)');
  }
}

/** What the service cannot run without; checked when it starts, not by `config check`. */
export function assertRunnable(config: PaymentCodeConfig): void {
  if (config.gateway.clientId === '') {
    throw new PaymentCodeConfigError('paymentCode.gateway.clientId', 'set the client id this service is registered under at the gateway (STEPGATE_PAYMENT_CODE_CLIENT_ID)');
  }
  if (config.gateway.clientAuth === 'client_secret_basic' && config.gateway.clientSecret === '') {
    throw new PaymentCodeConfigError('paymentCode.gateway.clientSecret', 'client_secret_basic needs the client secret (STEPGATE_PAYMENT_CODE_CLIENT_SECRET)');
  }
  if (config.gateway.clientAuth === 'private_key_jwt' && config.gateway.clientKeyFile === '') {
    throw new PaymentCodeConfigError('paymentCode.gateway.clientKeyFile', 'private_key_jwt needs the private JWK file (STEPGATE_PAYMENT_CODE_CLIENT_KEY_FILE)');
  }
}

/** The configuration with its secrets masked, for printing. */
export function maskedPaymentCodeConfig(config: PaymentCodeSection): PaymentCodeSection {
  return {
    ...config,
    secrets: { masterKey: config.secrets.masterKey === '' ? '' : '***' },
    gateway: { ...config.gateway, clientSecret: config.gateway.clientSecret === '' ? '' : '***' },
  };
}
