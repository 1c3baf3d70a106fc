import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { hash, parseOptions, verify } from '@node-rs/argon2';
import { AppError } from '../../errors/app-error.ts';

/** argon2id cost parameters (config `password.argon2`). */
export interface Argon2Params {
  memoryKiB: number;
  iterations: number;
  parallelism: number;
}

// @node-rs/argon2 declares Algorithm as an ambient const enum, which erasable TypeScript
// cannot reference; 2 is Argon2id there.
const ARGON2ID = 2;

/**
 * Caps the number of argon2 computations in flight. Each one holds ~19 MiB and a libuv
 * thread for tens of milliseconds; without a cap a login flood fills the thread pool (which
 * file and DNS work also need) and the memory. `run` waits in arrival order (operator work:
 * creating users, setting passwords); `tryAcquire` never waits (sign-in, see `admit`).
 */
export class Semaphore {
  readonly #max: number;
  #active = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(max: number) {
    if (!Number.isInteger(max) || max < 1) throw new TypeError('semaphore size must be a positive integer');
    this.#max = max;
  }

  get active(): number {
    return this.#active;
  }

  get size(): number {
    return this.#max;
  }

  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * A slot now, or undefined when all are taken (nobody waits). Call the release once.
   * `beyond` lets a priority caller go that many slots past the size (see `admitStepUp`).
   */
  tryAcquire(beyond = 0): (() => void) | undefined {
    if (this.#active >= this.#max + beyond) return undefined;
    this.#active += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#release();
    };
  }

  #release(): void {
    const next = this.#waiting.shift();
    // The slot passes straight to the next waiter, so `active` never dips and overshoots.
    if (next === undefined) this.#active -= 1;
    else next();
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#active >= this.#max) {
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else {
      this.#active += 1;
    }
    try {
      return await fn();
    } finally {
      this.#release();
    }
  }
}

/**
 * One semaphore per process and size: the CPU is the shared resource, whatever number of
 * gateways run in the process. `size` 0 means one slot per core (`password.maxConcurrentHashes`).
 */
const semaphores = new Map<number, Semaphore>();
export function argon2SlotsFor(size = 0): Semaphore {
  const n = size === 0 ? Math.max(1, availableParallelism()) : size;
  let s = semaphores.get(n);
  if (s === undefined) {
    s = new Semaphore(n);
    semaphores.set(n, s);
  }
  return s;
}
export const argon2Slots = argon2SlotsFor(0);

/** The semaphore whose slot the current async context holds (inside `admit`). */
const admitted = new AsyncLocalStorage<Semaphore>();

/** Slots a step-up's password check may use beyond `password.maxConcurrentHashes`. */
export const STEPUP_RESERVED_SLOTS = 1;

/** How long a refused sign-in is told to wait: one argon2 verification is tens of milliseconds. */
const OVERLOADED_RETRY_SECONDS = 1;

/** The refusal of a sign-in beyond the argon2 capacity (503, Retry-After). */
export function overloadedError(): AppError {
  return new AppError('overloaded', { retryAfterSeconds: OVERLOADED_RETRY_SECONDS, detail: 'Too many passwords are being checked right now; try again in a moment.' });
}

/**
 * argon2id password hashing with PHC strings. Inputs must already be normalised
 * (`normalisePassword`): the hasher hashes exactly the string it is given, never truncated.
 */
/** One dummy hash per parameter set and process (every gateway in a process may share it). */
const dummies = new Map<string, Promise<string>>();

export class PasswordHasher {
  readonly params: Readonly<Argon2Params>;
  readonly #slots: Semaphore;

  constructor(params: Argon2Params, slots: Semaphore = argon2Slots) {
    this.params = Object.freeze({ ...params });
    this.#slots = slots;
  }

  /**
   * Runs `work` holding one argon2 slot, or refuses at once with `overloaded` (503,
   * Retry-After) when every slot is taken: a sign-in beyond capacity is answered in
   * microseconds instead of queueing behind the hashes (which would only turn a flood into
   * timeouts for everyone). Call it before anything is charged or written, so a refusal
   * changes nothing. Hashing inside `work` uses the slot held (verify, then a rehash).
   */
  async admit<T>(work: () => Promise<T>): Promise<T> {
    return this.#admit(work, 0);
  }

  /**
   * True while every regular slot is taken: a sign-in arriving now would be refused by
   * `admit`. A hint for shedding load early (the rate-limit middleware); `admit` still decides.
   */
  get saturated(): boolean {
    return this.#slots.active >= this.#slots.size;
  }

  /**
   * `admit` for a password proven inside a step-up (someone approving a payment): it may use
   * STEPUP_RESERVED_SLOTS slots beyond the cap, so a sign-in flood that holds every regular
   * slot cannot starve step-ups. Step-ups are bounded on their own (a ticket per
   * transaction, its attempt limit, the per-client budgets), so the extra lane cannot be
   * flooded the way the open sign-in form can; beyond it they are refused like sign-ins.
   */
  async admitStepUp<T>(work: () => Promise<T>): Promise<T> {
    return this.#admit(work, STEPUP_RESERVED_SLOTS);
  }

  async #admit<T>(work: () => Promise<T>, beyond: number): Promise<T> {
    if (admitted.getStore() === this.#slots) return work();
    const release = this.#slots.tryAcquire(beyond);
    if (release === undefined) throw overloadedError();
    try {
      return await admitted.run(this.#slots, work);
    } finally {
      release();
    }
  }

  /** Runs one argon2 computation in the slot `admit` holds, or waits for one. */
  #inSlot<T>(fn: () => Promise<T>): Promise<T> {
    if (admitted.getStore() === this.#slots) return fn();
    return this.#slots.run(fn);
  }

  hash(password: string): Promise<string> {
    return this.#inSlot(() =>
      hash(password, {
        algorithm: ARGON2ID,
        memoryCost: this.params.memoryKiB,
        timeCost: this.params.iterations,
        parallelism: this.params.parallelism,
      }),
    );
  }

  /** False (never a throw) for a malformed stored hash: a corrupt row must not become a 500 on login. */
  async verify(phc: string, password: string): Promise<boolean> {
    return this.#inSlot(async () => {
      try {
        return await verify(phc, password);
      } catch {
        return false;
      }
    });
  }

  /**
   * Verifies against a hash of a random password made with the current parameters, so a
   * login for an unknown user costs the same as one for a known user with a wrong password.
   */
  async verifyDummy(password: string): Promise<false> {
    await this.verify(await this.#dummyHash(), password);
    return false;
  }

  /**
   * Makes the dummy hash now (start-up), so not even the first unknown-user login does the
   * extra hashing work that would set it apart from a wrong password.
   */
  async prepareDummy(): Promise<void> {
    await this.#dummyHash();
  }

  #dummyHash(): Promise<string> {
    const key = `${this.params.memoryKiB}:${this.params.iterations}:${this.params.parallelism}`;
    let dummy = dummies.get(key);
    if (dummy === undefined) {
      dummy = this.hash(randomBytes(32).toString('base64url'));
      dummies.set(key, dummy);
      // A failed hash must not be cached for good.
      dummy.catch(() => dummies.delete(key));
    }
    return dummy;
  }

  /** True when `phc` was made with other parameters (or another algorithm) than the current ones. */
  needsRehash(phc: string): boolean {
    try {
      const o = parseOptions(phc);
      return (
        (o.algorithm as number) !== ARGON2ID ||
        o.memoryCost !== this.params.memoryKiB ||
        o.timeCost !== this.params.iterations ||
        o.parallelism !== this.params.parallelism
      );
    } catch {
      return true;
    }
  }
}
