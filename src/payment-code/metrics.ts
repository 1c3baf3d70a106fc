import { Counter, collectDefaultMetrics, Histogram, Registry } from 'prom-client';
import type { Phase } from './step-up.ts';
import type { GroupCommitStats } from './store/sqlite-dialect.ts';

/**
 * The payment-code service's Prometheus metrics, served at GET /metrics. One registry per
 * service instance (tests run several in one process). Labels are bounded: route templates,
 * phases, code kinds and problem codes — never a code, a subject or an amount.
 */
export function createPaymentCodeMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'stepgate_payment_code_' });
  const httpDuration = new Histogram({
    name: 'stepgate_payment_code_http_request_duration_seconds',
    help: 'HTTP request latency by method, route template and status class.',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const phaseDuration = new Histogram({
    name: 'stepgate_payment_code_phase_duration_seconds',
    help: 'Time spent per phase: gateway_token (fetching the step-up token), token_verification, code_write, render, redeem.',
    labelNames: ['phase'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry],
  });
  const issued = new Counter({
    name: 'stepgate_payment_code_issued_total',
    help: 'Payment codes and offline seeds handed out, by kind (online, offline_seed).',
    labelNames: ['kind'] as const,
    registers: [registry],
  });
  const stepUpRequired = new Counter({
    name: 'stepgate_payment_code_stepup_required_total',
    help: 'Requests answered 401 with a new step-up at the gateway, by action.',
    labelNames: ['action'] as const,
    registers: [registry],
  });
  const refused = new Counter({
    name: 'stepgate_payment_code_refused_total',
    help: 'Issuance and redemption requests refused, by operation (issue, offline_seed, redeem) and problem code (token_invalid, code_already_redeemed, …): watch for replay and guessing.',
    labelNames: ['operation', 'code'] as const,
    registers: [registry],
  });
  const redemptions = new Counter({
    name: 'stepgate_payment_code_redemptions_total',
    help: 'Successful redemptions by kind (online, offline, signed_qr).',
    labelNames: ['kind'] as const,
    registers: [registry],
  });
  const observePhase = (phase: Phase, seconds: number): void => {
    phaseDuration.observe({ phase }, seconds);
  };
  /** SQLite only: the group WAL sync (each fdatasync makes every commit before it durable). */
  const watchGroupCommit = (stats: GroupCommitStats): void => {
    const counter = (name: string, help: string, read: () => number) =>
      new Counter({
        name,
        help,
        registers: [registry],
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    counter('stepgate_payment_code_sqlite_wal_syncs_total', 'SQLite: fdatasyncs of the WAL (off the event loop; the commits of one event-loop turn share one).', () => stats.flushes);
    counter('stepgate_payment_code_sqlite_wal_sync_waiters_total', 'SQLite: database calls that committed a write and were answered only after a WAL fdatasync.', () => stats.waited);
    counter('stepgate_payment_code_sqlite_checkpoints_total', 'SQLite: WAL checkpoints run by the checkpointer thread (off the event loop).', () => stats.checkpoints);
    counter('stepgate_payment_code_sqlite_wal_sync_failures_total', 'SQLite: WAL fdatasyncs that failed (their callers and every later writer are refused until restart).', () => stats.failedFlushes);
  };
  return { registry, httpDuration, phaseDuration, issued, stepUpRequired, refused, redemptions, observePhase, watchGroupCommit };
}

export type PaymentCodeMetrics = ReturnType<typeof createPaymentCodeMetrics>;
