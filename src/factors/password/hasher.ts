import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { hash, parseOptions, verify } from '@node-rs/argon2';

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
 * file and DNS work also need) and the memory. Waiters queue in arrival order.
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

  get waiting(): number {
    return this.#waiting.length;
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
      const next = this.#waiting.shift();
      // The slot passes straight to the next waiter, so `active` never dips and overshoots.
      if (next === undefined) this.#active -= 1;
      else next();
    }
  }
}

/** One per process: the CPU is the shared resource, whatever number of gateways run in it. */
export const argon2Slots = new Semaphore(Math.max(1, availableParallelism()));

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

  hash(password: string): Promise<string> {
    return this.#slots.run(() =>
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
    return this.#slots.run(async () => {
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
