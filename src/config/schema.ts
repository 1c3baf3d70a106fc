import { z } from 'zod';
import { OTP_ALGORITHMS } from '../otp/hotp.ts';
import { paymentCodeSectionSchema } from '../payment-code/config.ts';

/**
 * The configuration schema. Defaults and their reasons are documented in
 * config/default.yaml, which is loaded first; the schema enforces types and bounds.
 */
const positiveInt = z.number().int().positive();

/** Authenticator-app TOTP: what a new enrolment gets, what it may choose, how codes are checked. */
function totpConfigSchema() {
  const algorithm = z.enum(OTP_ALGORITHMS);
  const digits = z.union([z.literal(6), z.literal(8)]);
  const period = z.union([z.literal(30), z.literal(60)]);
  return z
    .strictObject({
      issuer: z.string().min(1).max(64).refine((s) => !s.includes(':'), 'must not contain ":" (it separates issuer and account in the otpauth label)'),
      algorithm,
      digits,
      periodSeconds: period,
      allowedAlgorithms: z.array(algorithm).min(1),
      allowedDigits: z.array(digits).min(1),
      allowedPeriods: z.array(period).min(1),
      windowSteps: z.number().int().min(0).max(2),
      secretBytes: z.number().int().min(20).max(64),
      confirmMaxAttempts: z.number().int().min(1).max(20),
    })
    .superRefine((c, ctx) => {
      if (!c.allowedAlgorithms.includes(c.algorithm)) ctx.addIssue({ code: 'custom', path: ['algorithm'], message: 'must be one of allowedAlgorithms' });
      if (!c.allowedDigits.includes(c.digits)) ctx.addIssue({ code: 'custom', path: ['digits'], message: 'must be one of allowedDigits' });
      if (!c.allowedPeriods.includes(c.periodSeconds)) ctx.addIssue({ code: 'custom', path: ['periodSeconds'], message: 'must be one of allowedPeriods' });
    });
}

/** One SMS send budget: at most `hour` messages per clock hour and `day` per UTC day (0 = none allowed). */
const smsBudget = z.strictObject({
  hour: z.number().int().min(0),
  day: z.number().int().min(0),
});

export const configSchema = z.strictObject({
  mode: z.enum(['development', 'production']),
  http: z.strictObject({
    port: z.number().int().min(0).max(65535),
    host: z.string().min(1),
    publicUrl: z.union([z.literal(''), z.url({ protocol: /^https?$/ })]),
    trustProxyHops: z.number().int().min(0).max(10),
    bodyLimitBytes: z.number().int().min(1024).max(10 * 1024 * 1024),
    requestTimeoutSeconds: positiveInt,
    headersTimeoutSeconds: positiveInt,
    keepAliveTimeoutSeconds: positiveInt,
    shutdownGraceSeconds: z.number().int().min(0),
    echoRoute: z.boolean(),
  }),
  dataDir: z.string().min(1),
  database: z.strictObject({
    url: z.union([z.literal(''), z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')]),
    schema: z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case SQL identifier'),
    poolMax: z.number().int().min(1).max(200),
    preparedStatements: z.boolean(),
    sqliteBusyTimeoutMs: z.number().int().min(0),
  }),
  secrets: z.strictObject({
    masterKey: z.string(),
  }),
  log: z.strictObject({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  }),
  runtime: z.strictObject({
    heap: z.strictObject({
      // 0: Node's default. Below 64 MB the gateway cannot hold its own working set.
      maxOldSpaceMb: z.union([z.literal(0), z.number().int().min(64).max(65_536)]),
      maxSemiSpaceMb: z.number().int().min(0).max(1024),
    }),
    mallocArenaMax: z.number().int().min(0).max(1024),
  }),
  password: z.strictObject({
    minLength: z.number().int().min(8),
    maxLength: z.number().int().min(64).max(1024),
    argon2: z.strictObject({
      memoryKiB: z.number().int().min(19456),
      iterations: z.number().int().min(2),
      parallelism: z.number().int().min(1).max(16),
    }),
    maxConcurrentHashes: z.number().int().min(0).max(1024),
    extraBlocklistFile: z.string(),
  }),
  login: z.strictObject({
    maxFailures: z.number().int().min(1).max(1000),
    lockSeconds: positiveInt,
    delayAfterFailures: z.number().int().min(0),
    delayBaseSeconds: z.number().min(0),
    delayMaxSeconds: z.number().min(0),
  }),
  session: z.strictObject({
    idleSeconds: positiveInt,
    absoluteSeconds: positiveInt,
    freshSeconds: positiveInt,
  }),
  admin: z.strictObject({
    setupLinkSeconds: positiveInt,
    passwordResetLinkSeconds: z.number().int().min(300).max(7 * 86400),
    apiRequiresSecondFactor: z.boolean(),
  }),
  audit: z.strictObject({
    serviceName: z.string().min(1),
  }),
  stepup: z.strictObject({
    signingAlg: z.enum(['ES256', 'EdDSA']),
    keyRefreshSeconds: z.number().int().min(1).max(300),
    transactionSeconds: z.number().int().min(30).max(300),
    maxAttempts: z.number().int().min(1).max(20),
    pollIntervalSeconds: z.number().int().min(1).max(60),
  }),
  rateLimits: z.strictObject({
    enabled: z.boolean(),
    windowSeconds: z.number().int().min(1).max(3600),
    perIp: z.number().int().min(1),
    loginPerIp: z.number().int().min(1),
    stepupUserPerIp: z.number().int().min(1),
    perClient: z.number().int().min(1),
  }),
  maintenance: z.strictObject({
    intervalSeconds: z.number().int().min(1).max(3600),
  }),
  notifications: z.strictObject({
    webhook: z.strictObject({
      url: z.union([z.literal(''), z.url({ protocol: /^https?$/ })]),
      secret: z.string(),
      timeoutSeconds: z.number().int().min(1).max(60),
    }),
    events: z.array(z.string().regex(/^[a-z_]+\.[a-z_]+$/, 'must be an audit event type such as user.password_changed')).max(100),
    maxAttempts: z.number().int().min(1).max(50),
    pollSeconds: z.number().int().min(1).max(300),
  }),
  factors: z.strictObject({
    maxFailures: z.number().int().min(1).max(1000),
    lockSeconds: positiveInt,
    pendingSeconds: z.number().int().min(60).max(86400),
    maxPerType: z.number().int().min(1).max(50),
  }),
  policies: z.strictObject({
    seedFile: z.string(),
  }),
  totp: totpConfigSchema(),
  recoveryCodes: z.strictObject({
    count: z.number().int().min(10).max(20),
  }),
  webauthn: z.strictObject({
    rpId: z.string().max(253),
    rpName: z.string().min(1).max(64),
    origins: z.array(z.string().min(1).max(2048)).max(20),
    counterRegression: z.enum(['refuse', 'flag-only']),
    attestation: z.enum(['none', 'direct']),
    aaguidAllowList: z.array(z.string()).max(1000),
    trustRootsFile: z.string(),
    timeoutSeconds: z.number().int().min(30).max(600),
    passkeyLogin: z.boolean(),
  }),
  // Read by the payment-code service's own loader; validated here too so `config check` and
  // every gateway start catch a typo in it.
  paymentCode: paymentCodeSectionSchema,
  sms: z.strictObject({
    provider: z.enum(['', 'outbox', 'twilio', 'aliyun', 'webhook']),
    brand: z.string().regex(/^[^\p{Cc}\p{Cf}【】[\]]{1,20}$/u, 'must be 1–20 printable characters without brackets'),
    codeTtlSeconds: z.number().int().min(60).max(600),
    maxAttempts: z.number().int().min(1).max(5),
    resendCooldownSeconds: z.number().int().min(30).max(600),
    maxSends: z.number().int().min(1).max(10),
    sendTimeoutSeconds: z.number().int().min(1).max(60),
    unavailableRetryAfterSeconds: z.number().int().min(1).max(3600),
    defaultRegion: z.string().regex(/^([A-Z]{2})?$/, 'must be an ISO 3166-1 alpha-2 region (CN) or empty'),
    allowedRegions: z.array(z.string().regex(/^[A-Z]{2}$/, 'must be an ISO 3166-1 alpha-2 region such as CN')).min(1),
    caps: z.strictObject({
      perNumber: smsBudget,
      perUser: smsBudget,
      perCountryCode: smsBudget,
      countryCodeOverrides: z.record(z.string().regex(/^[1-9][0-9]{0,2}$/, 'must be a country calling code without +, e.g. 86'), smsBudget),
      global: smsBudget,
    }),
    twilio: z.strictObject({
      accountSid: z.string(),
      authToken: z.string(),
      from: z.string(),
      messagingServiceSid: z.string(),
      baseUrl: z.url({ protocol: /^https?$/ }),
    }),
    aliyun: z.strictObject({
      accessKeyId: z.string(),
      accessKeySecret: z.string(),
      endpoint: z.url({ protocol: /^https?$/ }),
      signName: z.string(),
      templateCodes: z.strictObject({ en: z.string(), 'zh-CN': z.string() }),
      templateParams: z.array(z.enum(['code', 'summary', 'minutes'])).min(1),
    }),
    webhook: z.strictObject({
      url: z.union([z.literal(''), z.url({ protocol: /^https?$/ })]),
      secret: z.string(),
    }),
  }),
  hardwareTokens: z.strictObject({
    lookAhead: z.number().int().min(0).max(100),
    timeWindowSteps: z.number().int().min(0).max(5),
    syncLookAhead: z.number().int().min(1).max(1000),
    syncWindowSteps: z.number().int().min(1).max(120),
    maxFailures: z.number().int().min(1).max(100),
    lockSeconds: z.number().int().min(0),
    bindMaxFailures: z.number().int().min(1).max(100),
    resyncMaxFailures: z.number().int().min(1).max(100),
    resyncLockSeconds: z.number().int().min(1).max(7 * 86_400),
    assignMaxFailures: z.number().int().min(1).max(100),
    assignActorMaxFailures: z.number().int().min(1).max(1000),
    assignLockSeconds: z.number().int().min(1).max(7 * 86_400),
    import: z.strictObject({
      maxBytes: z.number().int().min(1024).max(2 * 1024 * 1024 * 1024),
      maxTokens: z.number().int().min(1).max(10_000_000),
      maxUploadTokens: z.number().int().min(1).max(10_000_000),
      maxUploadBytes: z.number().int().min(1024).max(2 * 1024 * 1024 * 1024),
      maxPbkdf2Iterations: z.number().int().min(1000).max(100_000_000),
    }),
  }),
});

export type Config = z.infer<typeof configSchema>;
