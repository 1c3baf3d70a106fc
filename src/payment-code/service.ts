import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import type { Express } from 'express';
import { createJwksCache, type JwksCache, systemClock, type VerifierClock } from '../verifier/index.ts';
import { assertRunnable, type PaymentCodeConfig } from './config.ts';
import { EventLog } from './events.ts';
import { type ClientAuth, GatewayClient, loadClientKey } from './gateway-client.ts';
import { createPaymentCodeApp } from './http/app.ts';
import type { IssueDeps } from './issue-code.ts';
import { createPaymentCodeLogger, type Logger } from './logger.ts';
import { createPaymentCodeMetrics, type PaymentCodeMetrics } from './metrics.ts';
import type { OfflineSeedDeps } from './offline-seeds.ts';
import type { RedeemDeps } from './redeem.ts';
import { purgeExpired } from './purge.ts';
import { loadPaymentCodeMasterKey, PaymentCodeSealer } from './sealer.ts';
import { QrKeyRing } from './signing-keys.ts';
import { type PhaseObserver, StepUpGate } from './step-up.ts';
import { openPaymentCodeStore, type PaymentCodeStore } from './store/database.ts';

export const PAYMENT_CODE_VERSION = '0.1.0';

/** Everything the routers and flows depend on, built once at start-up (tests inject clock, logger, fetch). */
export interface PaymentCodeService {
  readonly config: PaymentCodeConfig;
  readonly store: PaymentCodeStore;
  readonly clock: VerifierClock;
  readonly logger: Logger;
  readonly metrics: PaymentCodeMetrics;
  readonly sealer: PaymentCodeSealer;
  readonly events: EventLog;
  readonly qrKeys: QrKeyRing;
  readonly gateway: GatewayClient;
  readonly jwks: JwksCache;
  readonly gate: StepUpGate;
  readonly issueDeps: IssueDeps;
  readonly seedDeps: OfflineSeedDeps;
  readonly redeemDeps: RedeemDeps;
  readonly app: Express;
  close(): Promise<void>;
}

export interface CreatePaymentCodeServiceOptions {
  clock?: VerifierClock;
  logger?: Logger;
  /** Used for every call to the gateway (API and JWKS). */
  fetch?: typeof fetch;
  /** Receives the duration of each phase of a request (metrics, the bench). */
  observe?: PhaseObserver;
}

export function sqliteFileFor(config: PaymentCodeConfig): string {
  return join(config.dataDir, 'payment-code.sqlite');
}

export async function openConfiguredPaymentCodeStore(config: PaymentCodeConfig): Promise<PaymentCodeStore> {
  return openPaymentCodeStore({
    url: config.database.url,
    sqliteFile: sqliteFileFor(config),
    schema: config.database.schema,
    poolMax: config.database.poolMax,
    queryTimeoutMs: config.database.queryTimeoutMs,
    sqliteBusyTimeoutMs: config.database.sqliteBusyTimeoutMs,
  });
}

export async function createPaymentCodeService(config: PaymentCodeConfig, options: CreatePaymentCodeServiceOptions = {}): Promise<PaymentCodeService> {
  assertRunnable(config);
  const logger = options.logger ?? createPaymentCodeLogger(config.log.level);
  const clock = options.clock ?? systemClock;
  const master = loadPaymentCodeMasterKey(config.secrets.masterKey, config.dataDir, config.mode);
  if (master.origin !== 'config') {
    logger.warn(
      { file: master.file },
      '!!! DEVELOPMENT MASTER KEY for the payment-code service: seeds and keys are sealed with a key stored next to the database. ' +
        'Set STEPGATE_PAYMENT_CODE_MASTER_KEY (openssl rand -base64 32) before real use; production mode refuses this.',
    );
  }
  const sealer = new PaymentCodeSealer(master.bytes);
  const clientKey = config.gateway.clientAuth === 'private_key_jwt' ? await loadClientKey(config.gateway.clientKeyFile) : undefined;

  const store = await openConfiguredPaymentCodeStore(config);
  try {
    await store.migrate();
  } catch (err) {
    await store.close();
    throw err;
  }
  const events = new EventLog(store.dialect, clock);
  const qrKeys = new QrKeyRing(store.db, sealer, clock, events);
  await qrKeys.init();

  const auth: ClientAuth =
    clientKey === undefined
      ? { method: 'client_secret_basic', clientId: config.gateway.clientId, secret: config.gateway.clientSecret }
      : { method: 'private_key_jwt', clientId: config.gateway.clientId, ...clientKey };
  const gateway = new GatewayClient({ baseUrl: config.gateway.url, issuer: config.gateway.issuer, auth, timeoutSeconds: config.gateway.timeoutSeconds, clock, logger, ...(options.fetch === undefined ? {} : { fetch: options.fetch }) });
  const jwks = createJwksCache({
    jwksUri: config.gateway.jwksUri,
    clock,
    allowInsecureHttp: config.gateway.allowInsecureHttp,
    timeoutSeconds: config.gateway.timeoutSeconds,
    ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
  });
  const metrics = createPaymentCodeMetrics();
  if (store.commitStats !== undefined) metrics.watchGroupCommit(store.commitStats);
  const extra = options.observe;
  const observe: PhaseObserver =
    extra === undefined
      ? metrics.observePhase
      : (phase, seconds) => {
          metrics.observePhase(phase, seconds);
          extra(phase, seconds);
        };
  const gate = new StepUpGate({
    db: store.db,
    sealer,
    events,
    clock,
    gateway,
    jwks,
    logger,
    issuer: config.gateway.issuer,
    requiredAcr: { 'payment_code.issue': config.stepUp.issueAcr, 'payment_code.offline_seed': config.stepUp.offlineSeedAcr },
    maxAuthAgeSeconds: config.stepUp.maxAuthAgeSeconds,
    clockToleranceSeconds: config.stepUp.clockToleranceSeconds,
    observe,
  });
  const codeIndexKey = sealer.deriveKey('code-index');
  const issueDeps: IssueDeps = {
    db: store.db,
    events,
    clock,
    gate,
    qrKeys,
    codeIndexKey,
    subjectHandleKey: sealer.deriveKey('subject-handle'),
    sealer,
    prefix: config.codes.prefix,
    ttlSeconds: config.codes.ttlSeconds,
    publicUrl: config.http.publicUrl,
    observe,
  };
  const seedDeps: OfflineSeedDeps = {
    db: store.db,
    events,
    clock,
    gate,
    sealer,
    prefix: config.codes.prefix,
    periodSeconds: config.offline.periodSeconds,
    seedTtlSeconds: config.offline.seedTtlSeconds,
    maxCodes: config.offline.maxCodes,
  };
  const redeemDeps: RedeemDeps = {
    db: store.db,
    events,
    clock,
    sealer,
    qrKeys,
    codeIndexKey,
    prefix: config.codes.prefix,
    publicUrl: config.http.publicUrl,
    maxFailures: config.offline.maxFailures,
    failureWindowSeconds: config.offline.failureWindowSeconds,
    observe,
  };
  const service = {
    config,
    store,
    clock,
    logger,
    metrics,
    sealer,
    events,
    qrKeys,
    gateway,
    jwks,
    gate,
    issueDeps,
    seedDeps,
    redeemDeps,
    app: undefined as unknown as Express,
    async close() {
      gateway.close();
      await store.close();
    },
  } satisfies PaymentCodeService;
  service.app = createPaymentCodeApp(service);
  return service;
}

export interface RunningPaymentCodeServer {
  service: PaymentCodeService;
  server: Server;
  url: string;
  stop(): Promise<void>;
}

export async function startPaymentCodeServer(config: PaymentCodeConfig, options: CreatePaymentCodeServiceOptions = {}): Promise<RunningPaymentCodeServer> {
  const service = await createPaymentCodeService(config, options);
  // Deadlines are checked every connectionsCheckingInterval (Node's default 30 s would let a
  // slowloris client outlive them); every second makes requestTimeout mean what it says.
  const server = createServer({ connectionsCheckingInterval: 1000 }, service.app);
  server.requestTimeout = config.http.requestTimeoutSeconds * 1000;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.http.port, config.http.host, () => resolve());
    });
  } catch (err) {
    await service.close();
    throw err;
  }
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.http.port;
  // Every ten minutes, and not keeping the process alive for it.
  const purge = setInterval(() => {
    purgeExpired(service.store.db, service.clock).then(
      (n) => service.logger.debug(n, 'purged expired rows'),
      (err: unknown) => service.logger.warn({ err }, 'purge failed'),
    );
  }, 600_000);
  purge.unref();
  let stopping: Promise<void> | undefined;
  return {
    service,
    server,
    url: `http://127.0.0.1:${port}`,
    stop() {
      stopping ??= (async () => {
        clearInterval(purge);
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        const grace = setTimeout(() => server.closeAllConnections(), config.http.shutdownGraceSeconds * 1000);
        await closed;
        clearTimeout(grace);
        await service.close();
      })();
      return stopping;
    },
  };
}
