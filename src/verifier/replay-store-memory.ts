import { systemClock, type VerifierClock } from './clock.ts';
import { assertConsumeArguments, DEFAULT_PRUNE_INTERVAL_SECONDS, type ReplayStore } from './replay-store.ts';

export interface MemoryReplayStoreOptions {
  /** Upper bound on remembered jtis. When full of unexpired entries the store refuses (fails closed). Default 100 000. */
  maxEntries?: number;
  clock?: VerifierClock;
  /** Expired entries are dropped at most this often (and whenever the store is full). Default 60. */
  pruneIntervalSeconds?: number;
}

/**
 * In-process replay store: right for a single-process relying service and for tests. Several
 * processes or hosts must share SQLite (one host) or PostgreSQL instead, or a token could be
 * accepted once per process.
 */
export class MemoryReplayStore implements ReplayStore {
  readonly #entries = new Map<string, number>();
  readonly #maxEntries: number;
  readonly #clock: VerifierClock;
  readonly #pruneIntervalMs: number;
  #nextPruneAt = 0;

  constructor(options: MemoryReplayStoreOptions = {}) {
    const maxEntries = options.maxEntries ?? 100_000;
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) throw new TypeError('maxEntries must be a positive integer');
    const pruneIntervalSeconds = options.pruneIntervalSeconds ?? DEFAULT_PRUNE_INTERVAL_SECONDS;
    if (!Number.isFinite(pruneIntervalSeconds) || pruneIntervalSeconds < 0) throw new TypeError('pruneIntervalSeconds must be >= 0');
    this.#maxEntries = maxEntries;
    this.#clock = options.clock ?? systemClock;
    this.#pruneIntervalMs = pruneIntervalSeconds * 1000;
  }

  /** Remembered entries (expired ones included until the next prune). */
  get size(): number {
    return this.#entries.size;
  }

  // Check and insert run without an await in between, so the event loop makes them atomic.
  async consume(jti: string, expiresAt: Date): Promise<boolean> {
    assertConsumeArguments(jti, expiresAt);
    const now = this.#clock.now().getTime();
    if (now >= this.#nextPruneAt || this.#entries.size >= this.#maxEntries) this.#prune(now);
    if (this.#entries.has(jti)) return false;
    if (this.#entries.size >= this.#maxEntries) {
      throw new Error(`MemoryReplayStore is full (${this.#maxEntries} unexpired entries); refusing rather than forgetting a jti`);
    }
    this.#entries.set(jti, expiresAt.getTime());
    return true;
  }

  /** Drops entries whose expiry has passed; returns how many. */
  prune(): number {
    return this.#prune(this.#clock.now().getTime());
  }

  #prune(now: number): number {
    let removed = 0;
    for (const [jti, expiresAt] of this.#entries) {
      if (expiresAt <= now) {
        this.#entries.delete(jti);
        removed += 1;
      }
    }
    this.#nextPruneAt = now + this.#pruneIntervalMs;
    return removed;
  }
}
