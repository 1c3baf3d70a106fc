import { readFileSync } from 'node:fs';

/**
 * The password policy (NIST SP 800-63B): a length range counted in characters after NFKC
 * normalisation, a blocklist of common passwords plus context words (the username, the
 * service name), and nothing else: no composition rules, never truncated.
 */

const SHIPPED_LIST = new URL('./data/common-passwords.txt', import.meta.url);

/** The form every password is hashed and compared in, so NFKC-equivalent inputs are one password. */
export function normalisePassword(password: string): string {
  return password.normalize('NFKC');
}

/** Characters (Unicode code points), not UTF-16 units: an emoji counts once. */
export function passwordLength(normalised: string): number {
  let n = 0;
  for (const _ of normalised) n += 1;
  return n;
}

export type PolicyRule = 'malformed' | 'too_short' | 'too_long' | 'blocklisted' | 'matches_username' | 'matches_service_name';

export interface PolicyViolation {
  rule: PolicyRule;
  /** Human-readable, for problem+json `invalid_params[].reason`. */
  message: string;
}

export interface Blocklist {
  readonly size: number;
  /** `candidate` is compared lower-cased. */
  has(candidate: string): boolean;
}

function parseList(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (line === '' || line.startsWith('#')) continue;
    out.push(normalisePassword(line).toLowerCase());
  }
  return out;
}

let shipped: ReadonlySet<string> | undefined;

/** The shipped list of common passwords (read once per process). */
export function shippedBlocklist(): ReadonlySet<string> {
  shipped ??= new Set(parseList(readFileSync(SHIPPED_LIST, 'utf8')));
  return shipped;
}

/**
 * The shipped list plus an operator's newline-separated file (config
 * `password.extraBlocklistFile`). An unreadable extra file is misconfiguration: TypeError.
 */
export function loadBlocklist(extraFile = ''): Blocklist {
  const base = shippedBlocklist();
  let extra: ReadonlySet<string> = new Set();
  if (extraFile !== '') {
    let text: string;
    try {
      text = readFileSync(extraFile, 'utf8');
    } catch (err) {
      throw new TypeError(`password.extraBlocklistFile ${extraFile} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    extra = new Set(parseList(text));
  }
  return {
    size: base.size + extra.size,
    has(candidate: string): boolean {
      const c = candidate.toLowerCase();
      return base.has(c) || extra.has(c);
    },
  };
}

export interface PasswordPolicyOptions {
  minLength: number;
  maxLength: number;
  blocklist: Blocklist;
  serviceName: string;
}

export class PasswordPolicy {
  readonly #o: PasswordPolicyOptions;

  constructor(options: PasswordPolicyOptions) {
    if (options.minLength < 1 || options.maxLength < options.minLength) throw new TypeError('password length bounds are inconsistent');
    this.#o = options;
  }

  get minLength(): number {
    return this.#o.minLength;
  }

  get maxLength(): number {
    return this.#o.maxLength;
  }

  /** Checks a new password for `username` (already normalised). Undefined when it is acceptable. */
  check(password: string, username: string): PolicyViolation | undefined {
    if (!password.isWellFormed()) return { rule: 'malformed', message: 'contains invalid Unicode (unpaired surrogates)' };
    const p = normalisePassword(password);
    const length = passwordLength(p);
    if (length < this.#o.minLength) return { rule: 'too_short', message: `must be at least ${this.#o.minLength} characters` };
    if (length > this.#o.maxLength) return { rule: 'too_long', message: `must be at most ${this.#o.maxLength} characters` };
    const lower = p.toLowerCase();
    if (this.#o.blocklist.has(lower)) return { rule: 'blocklisted', message: 'is too common: choose a less predictable password' };
    if (username !== '' && lower === normalisePassword(username).toLowerCase()) {
      return { rule: 'matches_username', message: 'must not be the username' };
    }
    if (lower === normalisePassword(this.#o.serviceName).toLowerCase()) {
      return { rule: 'matches_service_name', message: 'must not be the service name' };
    }
    return undefined;
  }
}
