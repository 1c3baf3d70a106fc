import { createPublicKey, type KeyObject } from 'node:crypto';
import { responseLifetimeSeconds } from './cache-lifetime.ts';
import { systemClock, type VerifierClock } from './clock.ts';
import { StepUpTokenError, VerifierUnavailableError } from './errors.ts';

export interface JwksCacheOptions {
  /** The gateway's `jwks_uri` (`https://gateway.example/.well-known/jwks.json`). */
  jwksUri: string;
  /** Injected fetch (tests, proxies). Default: the global fetch. */
  fetch?: typeof fetch;
  clock?: VerifierClock;
  /**
   * At most one fetch per this many seconds, whatever triggers it. A token with an unknown
   * `kid` causes a refresh, so without this a flood of random kids would hammer the gateway.
   * Default 30.
   */
  minRefreshIntervalSeconds?: number;
  /**
   * The longest a fetched key set is used before it is fetched again. Within that bound the
   * gateway's answer decides: `Cache-Control: max-age` (less its `Age`), and `no-store`,
   * `no-cache` or `max-age=0` mean "refetch as soon as `minRefreshIntervalSeconds` allows".
   * The header's lifetime is clamped to [`minRefreshIntervalSeconds`, this]; an answer without
   * a usable `max-age` (none, or malformed) is used for exactly this long. Default 300.
   */
  cacheMaxAgeSeconds?: number;
  /**
   * When a refresh fails (gateway unreachable), keep using the last good key set for this long
   * past the end of its lifetime (above) instead of refusing every token. 0 fails closed at
   * once. Default 900.
   */
  staleIfErrorSeconds?: number;
  /** Per-fetch timeout. Default 5. */
  timeoutSeconds?: number;
  /** Allow `http:` to a non-loopback host (e.g. a gateway on a private container network). Default false. */
  allowInsecureHttp?: boolean;
}

/** Header fields the key lookup needs (a subset of the JWS protected header). */
export interface KeyLookupHeader {
  alg?: string;
  kid?: string;
}

export interface JwksCache {
  readonly jwksUri: string;
  /**
   * The gateway's public key for this header's `kid`, usable with its `alg`. Refreshes the set
   * (rate-limited) when the kid is unknown. Throws StepUpTokenError (`kid_unknown`,
   * `signature_invalid` when the key does not fit the algorithm) or VerifierUnavailableError
   * (`jwks_unavailable`).
   */
  getKey(header: KeyLookupHeader): Promise<KeyObject>;
  /** Fetches now, unless a fetch ran less than `minRefreshIntervalSeconds` ago. Throws when the fetch fails. */
  refresh(): Promise<void>;
  /** How many fetches were started (metrics, tests). */
  readonly fetchCount: number;
}

type StepUpAlgorithm = 'ES256' | 'EdDSA';

interface CachedKey {
  alg: StepUpAlgorithm;
  /** The public key material; an unchanged key across refreshes keeps its imported key. */
  fingerprint: string;
  /**
   * A node:crypto KeyObject, not a WebCrypto CryptoKey: jose verifies with a KeyObject through
   * node:crypto directly, which measured ~15 % more verifications per CPU-second than the
   * WebCrypto path (see docs/performance.md).
   */
  key: KeyObject;
}

const MAX_JWKS_BYTES = 64 * 1024;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function assertSeconds(value: number, label: string, min = 0): number {
  if (!Number.isFinite(value) || value < min) throw new TypeError(`${label} must be a number >= ${min}`);
  return value;
}

function isLoopback(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

/**
 * Only public signature keys of the two algorithms Stepgate signs with are usable: EC P-256
 * (ES256) and OKP Ed25519 (EdDSA), `use` "sig" or absent. Anything else in the set — RSA,
 * symmetric keys, encryption keys, anything carrying private material — is ignored.
 */
function usableKey(jwk: unknown): { kid: string; alg: StepUpAlgorithm; publicJwk: Record<string, string> } | undefined {
  if (!isPlainObject(jwk)) return undefined;
  const { kty, crv, kid, use, key_ops: keyOps, alg, x, y } = jwk;
  if (typeof kid !== 'string' || kid.length === 0) return undefined;
  if (use !== undefined && use !== 'sig') return undefined;
  if (keyOps !== undefined && !(Array.isArray(keyOps) && keyOps.includes('verify'))) return undefined;
  if ('d' in jwk || 'k' in jwk) return undefined;
  if (kty === 'EC' && crv === 'P-256' && typeof x === 'string' && typeof y === 'string') {
    if (alg !== undefined && alg !== 'ES256') return undefined;
    return { kid, alg: 'ES256', publicJwk: { kty, crv, x, y } };
  }
  if (kty === 'OKP' && crv === 'Ed25519' && typeof x === 'string') {
    if (alg !== undefined && alg !== 'EdDSA' && alg !== 'Ed25519') return undefined;
    return { kid, alg: 'EdDSA', publicJwk: { kty, crv, x } };
  }
  return undefined;
}

async function readLimited(response: Response, maxBytes: number): Promise<string> {
  const declared = Number(response.headers.get('content-length') ?? '0');
  if (declared > maxBytes) throw new Error(`JWKS response too large (${declared} bytes)`);
  const reader = response.body?.getReader();
  if (reader === undefined) return '';
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel();
      throw new Error(`JWKS response larger than ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks));
}

class RemoteJwksCache implements JwksCache {
  readonly jwksUri: string;
  readonly #fetch: typeof fetch;
  readonly #clock: VerifierClock;
  readonly #minRefreshMs: number;
  readonly #maxAgeMs: number;
  readonly #staleIfErrorMs: number;
  readonly #timeoutMs: number;
  #keys: Map<string, CachedKey> | undefined;
  /** When the cached set stops being fresh: fetch time + the lifetime its answer was given. */
  #freshUntil = Number.NEGATIVE_INFINITY;
  #lastAttemptAt = Number.NEGATIVE_INFINITY;
  #inflight: Promise<void> | undefined;
  #fetchCount = 0;

  constructor(options: JwksCacheOptions) {
    let url: URL;
    try {
      url = new URL(options.jwksUri);
    } catch {
      throw new TypeError('jwksUri must be an absolute URL');
    }
    const secure = url.protocol === 'https:' || (url.protocol === 'http:' && (isLoopback(url.hostname) || options.allowInsecureHttp === true));
    if (!secure) throw new TypeError('jwksUri must be https: (http: only to a loopback host, or with allowInsecureHttp)');
    this.jwksUri = url.href;
    this.#fetch = options.fetch ?? globalThis.fetch;
    this.#clock = options.clock ?? systemClock;
    this.#minRefreshMs = assertSeconds(options.minRefreshIntervalSeconds ?? 30, 'minRefreshIntervalSeconds') * 1000;
    this.#maxAgeMs = assertSeconds(options.cacheMaxAgeSeconds ?? 300, 'cacheMaxAgeSeconds') * 1000;
    this.#staleIfErrorMs = assertSeconds(options.staleIfErrorSeconds ?? 900, 'staleIfErrorSeconds') * 1000;
    this.#timeoutMs = assertSeconds(options.timeoutSeconds ?? 5, 'timeoutSeconds', 0.001) * 1000;
  }

  get fetchCount(): number {
    return this.#fetchCount;
  }

  async getKey(header: KeyLookupHeader): Promise<KeyObject> {
    const { kid, alg } = header;
    if (alg !== 'ES256' && alg !== 'EdDSA') throw new StepUpTokenError('alg_not_allowed', 'alg must be ES256 or EdDSA', { field: 'alg' });
    if (typeof kid !== 'string' || kid.length === 0) throw new StepUpTokenError('token_malformed', 'kid header missing', { field: 'kid' });

    const keys = await this.#currentKeys();
    let entry = keys.get(kid);
    if (entry === undefined) {
      // Maybe the gateway rotated its key: look again, unless we looked very recently.
      try {
        await this.#fetchIfAllowed();
      } catch (cause) {
        throw new VerifierUnavailableError('jwks_unavailable', 'could not refresh the gateway JWKS for an unknown kid', { cause });
      }
      entry = this.#keys?.get(kid);
    }
    if (entry === undefined) throw new StepUpTokenError('kid_unknown', 'no gateway key with this kid', { field: 'kid' });
    // The kid names a key of another type: never verify with a key the algorithm was not made for.
    if (entry.alg !== alg) throw new StepUpTokenError('signature_invalid', `the key named by kid is not an ${alg} key`, { field: 'alg' });
    return entry.key;
  }

  async refresh(): Promise<void> {
    await this.#fetchIfAllowed();
  }

  /** The key set to use now: fetched when missing or no longer fresh; stale on failure within the grace window. */
  async #currentKeys(): Promise<Map<string, CachedKey>> {
    let failure: unknown;
    if (this.#keys === undefined || this.#clock.now().getTime() >= this.#freshUntil) {
      try {
        await this.#fetchIfAllowed();
      } catch (err) {
        failure = err;
      }
    }
    const keys = this.#keys;
    if (keys === undefined) {
      throw new VerifierUnavailableError('jwks_unavailable', 'the gateway JWKS could not be fetched', { cause: failure });
    }
    if (this.#clock.now().getTime() >= this.#freshUntil + this.#staleIfErrorMs) {
      throw new VerifierUnavailableError('jwks_unavailable', 'the cached gateway JWKS is too old and could not be refreshed', { cause: failure });
    }
    return keys;
  }

  /** Joins the fetch in flight, or starts one if the rate limit allows; otherwise does nothing. */
  #fetchIfAllowed(): Promise<void> {
    if (this.#inflight !== undefined) return this.#inflight;
    const now = this.#clock.now().getTime();
    if (now - this.#lastAttemptAt < this.#minRefreshMs) return Promise.resolve();
    this.#lastAttemptAt = now;
    this.#fetchCount += 1;
    this.#inflight = this.#fetchKeys(now).finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  async #fetchKeys(startedAt: number): Promise<void> {
    const response = await this.#fetch(this.jwksUri, {
      headers: { accept: 'application/jwk-set+json, application/json' },
      redirect: 'error',
      signal: AbortSignal.timeout(this.#timeoutMs),
    });
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new Error(`the JWKS endpoint answered HTTP ${response.status}`);
    }
    const body: unknown = JSON.parse(await readLimited(response, MAX_JWKS_BYTES));
    if (!isPlainObject(body) || !Array.isArray(body.keys)) throw new Error('the JWKS response is not a JWK set');

    const candidates = body.keys.map(usableKey).filter((key) => key !== undefined);
    const kidCounts = new Map<string, number>();
    for (const { kid } of candidates) kidCounts.set(kid, (kidCounts.get(kid) ?? 0) + 1);

    const next = new Map<string, CachedKey>();
    await Promise.all(
      candidates
        // Two keys under one kid are ambiguous: use neither.
        .filter(({ kid }) => kidCounts.get(kid) === 1)
        .map(async ({ kid, alg, publicJwk }) => {
          const fingerprint = `${alg}:${JSON.stringify(publicJwk)}`;
          const previous = this.#keys?.get(kid);
          if (previous !== undefined && previous.fingerprint === fingerprint) {
            next.set(kid, previous);
            return;
          }
          try {
            // usableKey pinned kty/crv to the algorithm (EC P-256 for ES256, OKP Ed25519 for EdDSA).
            const key = createPublicKey({ key: publicJwk, format: 'jwk' });
            next.set(kid, { alg, fingerprint, key });
          } catch {
            // Not a valid point on the curve, bad encoding…: the key is unusable, skip it.
          }
        }),
    );
    this.#keys = next;
    this.#freshUntil = startedAt + this.#lifetimeMs(response.headers);
  }

  /**
   * The gateway's max-age (less Age) within [minRefreshInterval, cacheMaxAge]: never trusted
   * longer than configured, never refetched faster than the rate limit allows anyway. Counted
   * from when the request was sent, so the time the answer took is not added to its lifetime.
   */
  #lifetimeMs(headers: Headers): number {
    const advertised = responseLifetimeSeconds(headers.get('cache-control'), headers.get('age'));
    if (advertised === undefined) return this.#maxAgeMs;
    const floor = Math.min(this.#minRefreshMs, this.#maxAgeMs);
    return Math.min(this.#maxAgeMs, Math.max(floor, advertised * 1000));
  }
}

/**
 * A cache of the gateway's public signing keys. Keys are imported once and reused across
 * refreshes; refreshes happen when the set's lifetime (the gateway's `Cache-Control: max-age`,
 * clamped to the configured bounds) ends and on an unknown `kid`, never more often than
 * `minRefreshIntervalSeconds`, and concurrent callers share one fetch in flight.
 */
export function createJwksCache(options: JwksCacheOptions): JwksCache {
  return new RemoteJwksCache(options);
}
