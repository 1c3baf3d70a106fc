import { createHmac, type KeyObject, timingSafeEqual } from 'node:crypto';
import { findOtp, hotp, type OtpAlgorithm, timeStep } from './hotp.ts';
import { sm3Generator } from './sm3.ts';

/**
 * Code matching for hardware tokens, over the four token families (HOTP, TOTP, SM3 event,
 * SM3 time). Pure: the caller passes the stored state and applies the returned one with a
 * guarded update. A "position" is the HOTP/SM3 counter or the time step.
 */

/** Event-based (counter) or time-based (clock) token. */
export type TokenKind = 'hotp' | 'totp';
/** RFC 4226/6238 HMAC hashes, or GM/T 0021 SM3. */
export type TokenAlgorithm = OtpAlgorithm | 'SM3';

export interface TokenCodeParams {
  kind: TokenKind;
  algorithm: TokenAlgorithm;
  digits: number;
  /** Time step of time tokens (ignored for event tokens). */
  periodSeconds: number;
  /**
   * GM/T 0021 challenge-response tokens: the challenge Q typed on the token's keypad, which
   * joins T (time tokens) or C (event tokens) in the ID. SM3 only.
   */
  challenge?: string | undefined;
}

export interface TokenState {
  /** Event tokens: the next counter expected. Time tokens: the last accepted step (replay guard). */
  counter: number;
  /** Time tokens: the token clock's learned offset, in steps. */
  driftSteps: number;
}

export interface TokenWindow {
  /** Event tokens: codes accepted past the expected counter. */
  lookAhead: number;
  /** Time tokens: steps accepted either side of now + drift. */
  steps: number;
}

export interface TokenMatch {
  /** The counter or time step the code belongs to. */
  position: number;
  /** The state to store: counter past the accepted value / the accepted step, and the drift. */
  next: TokenState;
}

/**
 * Code for each position of one token. SM3 time tokens use T, SM3 event tokens C, and a
 * challenge-response token adds the challenge Q to either.
 */
export function tokenCodeGenerator(key: KeyObject, p: TokenCodeParams): (position: number) => string {
  if (p.algorithm === 'SM3') {
    const q = p.challenge === undefined ? {} : { challenge: p.challenge };
    return sm3Generator(key, p.digits, p.kind === 'hotp' ? (n) => ({ counter: n, ...q }) : (n) => ({ time: n, ...q }));
  }
  if (p.challenge !== undefined) throw new TypeError('only GM/T 0021 SM3 tokens take a challenge');
  const algorithm = p.algorithm;
  return (n) => hotp(key, n, p.digits, algorithm);
}

/** The time step a time token is showing (drift aside) at `at`. */
export function tokenStep(p: TokenCodeParams, at: Date): number {
  return timeStep(at, p.periodSeconds);
}

function wellFormed(code: string, digits: number): boolean {
  return code.length === digits && /^[0-9]+$/.test(code);
}

/** The largest counter an SM3 event token can show (C is 4 bytes). */
function maxPosition(p: TokenCodeParams): number {
  return p.algorithm === 'SM3' && p.kind === 'hotp' ? 0xffff_ffff : Number.MAX_SAFE_INTEGER - 1;
}

/** The search range for one code: [from, to], never at or below an accepted time step. */
function range(p: TokenCodeParams, state: TokenState, at: Date, window: TokenWindow): { from: number; to: number; now: number } {
  if (p.kind === 'hotp') return { from: state.counter, to: Math.min(state.counter + window.lookAhead, maxPosition(p)), now: 0 };
  const now = tokenStep(p, at);
  const center = now + state.driftSteps;
  return { from: Math.max(center - window.steps, state.counter + 1, 0), to: center + window.steps, now };
}

function nextState(p: TokenCodeParams, position: number, now: number, state: TokenState): TokenState {
  return p.kind === 'hotp' ? { counter: position + 1, driftSteps: state.driftSteps } : { counter: position, driftSteps: position - now };
}

/**
 * One code inside the normal window. Every candidate is computed and compared (findOtp),
 * so timing does not reveal where a match was.
 */
export function matchTokenCode(key: KeyObject, p: TokenCodeParams, state: TokenState, code: string, at: Date, window: TokenWindow): TokenMatch | undefined {
  if (!wellFormed(code, p.digits)) return undefined;
  const r = range(p, state, at, window);
  const found = findOtp(code, r.from, r.to, tokenCodeGenerator(key, p));
  return found === undefined ? undefined : { position: found, next: nextState(p, found, r.now, state) };
}

/**
 * Was `code` valid just before the window (already used)? Only to tell a replay from a
 * wrong code in the audit log; never changes the answer to the user.
 */
export function wasRecentlyUsed(key: KeyObject, p: TokenCodeParams, state: TokenState, code: string, at: Date, window: TokenWindow): boolean {
  if (!wellFormed(code, p.digits)) return false;
  const gen = tokenCodeGenerator(key, p);
  if (p.kind === 'hotp') return findOtp(code, Math.max(0, state.counter - window.lookAhead - 1), state.counter - 1, gen) !== undefined;
  const now = tokenStep(p, at) + state.driftSteps;
  return findOtp(code, now - window.steps, Math.min(now + window.steps, state.counter), gen) !== undefined;
}

/**
 * Resynchronisation: two consecutive codes (positions n and n+1) anywhere in the wide sync
 * window — event tokens from the expected counter up to `lookAhead` ahead, time tokens
 * `steps` either side of the server clock (ignoring the learned drift, which may be what
 * is wrong). Returns the position of the SECOND code; the state moves past it.
 */
export function matchConsecutiveCodes(key: KeyObject, p: TokenCodeParams, state: TokenState, first: string, second: string, at: Date, window: TokenWindow): TokenMatch | undefined {
  if (!wellFormed(first, p.digits) || !wellFormed(second, p.digits)) return undefined;
  let from: number;
  let to: number;
  let now = 0;
  if (p.kind === 'hotp') {
    from = state.counter;
    to = Math.min(state.counter + window.lookAhead, maxPosition(p) - 1);
  } else {
    now = tokenStep(p, at);
    from = Math.max(now - window.steps, state.counter + 1, 0);
    to = now + window.steps;
  }
  if (to < from) return undefined;
  const gen = tokenCodeGenerator(key, p);
  const a = Buffer.from(first, 'utf8');
  const b = Buffer.from(second, 'utf8');
  let found: number | undefined;
  let previous = timingSafeEqual(Buffer.from(gen(from), 'utf8'), a);
  for (let n = from + 1; n <= to + 1; n += 1) {
    const code = Buffer.from(gen(n), 'utf8');
    const matchesSecond = timingSafeEqual(code, b);
    if (previous && matchesSecond && found === undefined) found = n;
    previous = timingSafeEqual(code, a);
  }
  return found === undefined ? undefined : { position: found, next: nextState(p, found, now, state) };
}

/**
 * The challenge a challenge-response token is asked for a step-up: `length` decimal digits
 * derived from the step-up id with a gateway key (HMAC-SHA-256), so the page and the API show
 * the same one, nothing needs storing, and a response is good for that step-up only.
 */
export function stepUpChallenge(key: KeyObject, stepupId: string, length: number): string {
  const mac = createHmac('sha256', key).update(`stepup:${stepupId}`).digest();
  let digits = '';
  for (let i = 0; digits.length < length; i += 4) digits += String(mac.readUInt32BE(i % 28) % 10_000).padStart(4, '0');
  return digits.slice(0, length);
}

/**
 * The challenge for binding and resynchronising a challenge-response token, where there is
 * no step-up: zeros, as many as the token's challenge length. Possession is proven all the
 * same (the response depends on the key and the clock or counter); the codes stay single-use.
 */
export function bindingChallenge(length: number): string {
  return '0'.repeat(length);
}
