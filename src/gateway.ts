import { AuditLog } from './audit/audit-log.ts';
import { notifiedEvents } from './notifications/delivery.ts';
import { type Clock, systemClock } from './clock.ts';
import type { Config } from './config/schema.ts';
import { loadMasterKey } from './crypto/master-key.ts';
import { Sealer } from './crypto/sealer.ts';
import { assertMasterKeyOpensDatabase, MasterKeyMismatch } from './crypto/master-key-check.ts';
import { ConfigError } from './config/load-config.ts';
import { createLogger, type Logger } from './logger.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import { openStore, redactUrl, type Store, sqliteFileFor } from './store/database.ts';
import { describeError, StartupError } from './errors/startup-error.ts';
import { SigningKeyRing } from './stepup/signing-keys.ts';
import { factorRegistry, type FactorRegistry } from './factors/factor.ts';
import { passwordServices } from './flows/users.ts';
import { webauthnServices } from './flows/webauthn.ts';
import { seedPolicySet } from './flows/policies.ts';
import { createTotpFactor } from './factors/totp/index.ts';
import { createRecoveryCodeFactor } from './factors/recovery-code/index.ts';
import { smsOtpFactorFor } from './flows/sms-otp.ts';
import { createHardwareOtpFactor, tokenChallengeKey } from './factors/hardware-otp/index.ts';

/**
 * Everything the gateway's flows and routers depend on, built once at start-up.
 * Tests build it with their own clock, logger and store.
 */
export interface Gateway {
  readonly config: Config;
  readonly store: Store;
  readonly sealer: Sealer;
  readonly audit: AuditLog;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Step-up token signing keys (sealed in the database, shared by all processes). */
  readonly keys: SigningKeyRing;
  /** Factor modules by type id. The step-up flow finds every factor here. */
  readonly factors: FactorRegistry;
  close(): Promise<void>;
}

export interface CreateGatewayOptions {
  clock?: Clock;
  logger?: Logger;
  /** Use this store instead of opening one from config (tests share per-file databases). */
  store?: Store;
  /** Apply migrations (default true). */
  migrate?: boolean;
}

/**
 * Opens the configured database and checks that it answers; an unreachable or unopenable
 * database is a StartupError naming it (password masked), which the CLI prints as one line.
 */
export async function openConfiguredStore(config: Config): Promise<Store> {
  const where = config.database.url === '' ? `SQLite database ${sqliteFileFor(config.dataDir)}` : `PostgreSQL database ${redactUrl(config.database.url)}`;
  let store: Store | undefined;
  try {
    store = await openStore({
      url: config.database.url,
      sqliteFile: sqliteFileFor(config.dataDir),
      schema: config.database.schema,
      poolMax: config.database.poolMax,
      preparedStatements: config.database.preparedStatements,
      sqliteBusyTimeoutMs: config.database.sqliteBusyTimeoutMs,
    });
    await store.ping();
    return store;
  } catch (err) {
    await store?.close().catch(() => undefined);
    throw new StartupError(`cannot open the ${where}: ${describeError(err)}`, { cause: err });
  }
}

export async function createGateway(config: Config, options: CreateGatewayOptions = {}): Promise<Gateway> {
  const logger = options.logger ?? createLogger(config.log.level);
  const clock = options.clock ?? systemClock;
  const master = loadMasterKey(config.secrets.masterKey, config.dataDir, config.mode);
  if (master.origin !== 'config') {
    logger.warn(
      { file: master.file },
      '!!! DEVELOPMENT MASTER KEY: secrets are sealed with a key stored next to the database. ' +
        'Set STEPGATE_MASTER_KEY (openssl rand -base64 32) before real use; production mode refuses this.',
    );
  }
  const store = options.store ?? (await openConfiguredStore(config));
  if (options.migrate !== false) await store.migrate();
  const sealer = new Sealer(master.key);
  if (options.migrate !== false) {
    try {
      await assertMasterKeyOpensDatabase(store.db, sealer, clock);
    } catch (err) {
      if (options.store === undefined) await store.close();
      if (!(err instanceof MasterKeyMismatch)) throw err;
      throw new ConfigError(
        'secrets.masterKey',
        `does not open the secrets sealed in the database: ${err.message}. Start with the key they are sealed under (after \`stepgate keys rotate-master\`, the new one)`,
      );
    }
  }
  const keys = new SigningKeyRing({ db: store.db, sealer, clock, alg: config.stepup.signingAlg, refreshSeconds: config.stepup.keyRefreshSeconds });
  if (options.migrate !== false) await keys.ensureActiveKey();
  const gw = {
    config,
    store,
    sealer,
    audit: new AuditLog(store.dialect, clock, { notify: notifiedEvents(config) }),
    clock,
    logger,
    metrics: createMetrics(store.commitStats),
    keys,
    factors: new Map() as FactorRegistry,
    async close() {
      if (options.store === undefined) await store.close();
    },
  } satisfies Gateway;
  // Factor modules are built from the gateway's configuration (argon2 parameters…).
  const smsOtp = smsOtpFactorFor(gw);
  gw.factors = factorRegistry(
    passwordServices(gw).factor,
    webauthnServices(gw).factor,
    ...(smsOtp === undefined ? [] : [smsOtp]),
    createTotpFactor({ sealer, windowSteps: config.totp.windowSteps }),
    createRecoveryCodeFactor(),
    createHardwareOtpFactor({
      sealer,
      window: { lookAhead: config.hardwareTokens.lookAhead, steps: config.hardwareTokens.timeWindowSteps },
      maxFailures: config.hardwareTokens.maxFailures,
      lockSeconds: config.hardwareTokens.lockSeconds,
      challengeKey: tokenChallengeKey(sealer),
    }),
  );
  await passwordServices(gw).hasher.prepareDummy();
  // Like the signing key above: a fresh database gets its first policy set (config policies.seedFile).
  // An invalid seed file stops the start here (ConfigError), not with a 500 later.
  if (options.migrate !== false) {
    try {
      await seedPolicySet(gw);
    } catch (err) {
      await gw.close();
      throw err;
    }
  }
  return gw;
}
