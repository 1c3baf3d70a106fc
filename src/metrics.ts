import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { GroupCommitStats } from './store/node-sqlite-dialect.ts';

/** One registry per app instance, so tests and several apps in one process do not clash. */
export function createMetrics(commitStats?: GroupCommitStats) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'stepgate_' });
  if (commitStats !== undefined) {
    // SQLite: the group fsync's effect (callers answered per fsync = waiters / syncs).
    new Gauge({
      name: 'stepgate_store_wal_syncs',
      help: 'SQLite: fdatasyncs of the WAL since start; each makes every commit before it durable (all the commits of one event-loop turn share one).',
      registers: [registry],
      collect() {
        this.set(commitStats.flushes);
      },
    });
    new Gauge({
      name: 'stepgate_store_wal_sync_waiters',
      help: 'SQLite: database calls since start that committed a write and were answered only after a WAL fdatasync.',
      registers: [registry],
      collect() {
        this.set(commitStats.waited);
      },
    });
    new Gauge({
      name: 'stepgate_store_wal_checkpoints',
      help: 'SQLite: WAL checkpoints since start run by the checkpointer thread (off the event loop).',
      registers: [registry],
      collect() {
        this.set(commitStats.checkpoints);
      },
    });
    new Gauge({
      name: 'stepgate_store_wal_sync_failures',
      help: 'SQLite: WAL fdatasyncs that failed since start; after the first, every write is refused until the process restarts (/readyz answers 503).',
      registers: [registry],
      collect() {
        this.set(commitStats.failedFlushes);
      },
    });
  }
  const httpDuration = new Histogram({
    name: 'stepgate_http_request_duration_seconds',
    help: 'HTTP request latency by method, route template and status class.',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const logins = new Counter({
    name: 'stepgate_login_total',
    help: 'Password login attempts by outcome (success, invalid_credentials, locked, throttled).',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  const stepups = new Counter({
    name: 'stepgate_stepup_events_total',
    help: 'Step-up transactions by event (created, completed, challenge_sent, factor_failed, denied, expired, cancelled, token_issued).',
    labelNames: ['event'] as const,
    registers: [registry],
  });
  const tokenIssueDuration = new Histogram({
    name: 'stepgate_token_issue_duration_seconds',
    help: 'Time to hand out a step-up token (guarded update, signing, audit).',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [registry],
  });
  const sms = new Counter({
    name: 'stepgate_sms_total',
    help: 'SMS codes by provider and outcome (sent, failed, refused_limit, refused_region): watch it for cost and SMS pumping.',
    labelNames: ['provider', 'outcome'] as const,
    registers: [registry],
  });
  const shedCharges = new Counter({
    name: 'stepgate_rate_limit_shed_charges_total',
    help: 'Rate-limit charges of sign-ins refused at once for capacity (every argon2 slot busy), by outcome: written (in the background), dropped (too many distinct counters pending), failed (the store refused; logged).',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  const notifications = new Counter({
    name: 'stepgate_notifications_total',
    help: 'Security notification deliveries to the webhook by outcome: delivered, retried (failed this time, tried again later), failed (given up after notifications.maxAttempts; logged).',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  return { registry, httpDuration, logins, stepups, tokenIssueDuration, sms, shedCharges, notifications };
}

export type Metrics = ReturnType<typeof createMetrics>;
