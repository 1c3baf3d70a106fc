/**
 * How long a response may be used, from its `Cache-Control` and `Age` header fields
 * (RFC 9111 §4.2 and §5.2), for the JWKS cache. The verifier is a private cache, so
 * `s-maxage` (shared caches only) and `public`/`private` change nothing; `Expires` and `Date`
 * are not read: `max-age` overrides `Expires`, and both need the two clocks to agree.
 */

/** RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2^31. */
const MAX_DELTA_SECONDS = 2 ** 31;

/** RFC 9110 §5.6.2 tchar. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const DELTA_SECONDS = /^[0-9]+$/;

export interface CacheDirective {
  /** Lower-cased directive name. */
  name: string;
  /** The argument, unquoted; undefined when the directive has none. */
  value: string | undefined;
}

/**
 * The directives of a `Cache-Control` field value (several field lines arrive joined with
 * ", "), or undefined when it is not the RFC 9111 grammar: `#( token [ "=" ( token /
 * quoted-string ) ] )`. A comma inside a quoted argument does not split.
 */
export function parseCacheControl(field: string): CacheDirective[] | undefined {
  const directives: CacheDirective[] = [];
  let i = 0;
  const n = field.length;
  const skipWhitespace = () => {
    while (i < n && (field[i] === ' ' || field[i] === '\t')) i += 1;
  };
  while (i < n) {
    skipWhitespace();
    if (field[i] === ',') {
      // Empty list elements are allowed (RFC 9110 §5.6.1).
      i += 1;
      continue;
    }
    if (i >= n) break;
    let end = i;
    while (end < n && field[end] !== '=' && field[end] !== ',' && field[end] !== ' ' && field[end] !== '\t') end += 1;
    const name = field.slice(i, end);
    if (!TOKEN.test(name)) return undefined;
    i = end;
    let value: string | undefined;
    if (field[i] === '=') {
      i += 1;
      if (field[i] === '"') {
        i += 1;
        let text = '';
        let closed = false;
        while (i < n) {
          const ch = field[i]!;
          if (ch === '\\') {
            if (i + 1 >= n) return undefined;
            text += field[i + 1];
            i += 2;
          } else if (ch === '"') {
            i += 1;
            closed = true;
            break;
          } else {
            text += ch;
            i += 1;
          }
        }
        if (!closed) return undefined;
        value = text;
      } else {
        let valueEnd = i;
        while (valueEnd < n && field[valueEnd] !== ',' && field[valueEnd] !== ' ' && field[valueEnd] !== '\t') valueEnd += 1;
        value = field.slice(i, valueEnd);
        if (!TOKEN.test(value)) return undefined;
        i = valueEnd;
      }
    }
    skipWhitespace();
    if (i < n && field[i] !== ',') return undefined;
    directives.push({ name: name.toLowerCase(), value });
  }
  return directives;
}

function deltaSeconds(text: string | undefined): number | undefined {
  if (text === undefined || !DELTA_SECONDS.test(text)) return undefined;
  return Math.min(Number(text), MAX_DELTA_SECONDS);
}

/**
 * The freshness lifetime the response grants, in seconds, already reduced by its `Age`; or
 * undefined when the headers say nothing usable, so the caller keeps its configured lifetime.
 *
 * - `no-store`, `no-cache` (with or without a field list): 0 — use it for this request only.
 * - `max-age=N` (token or quoted form): N − Age, at least 0. Several `max-age` that disagree:
 *   0 (RFC 9111 §4.2.1 lets a cache take such a response as stale, the safe reading).
 * - No `Cache-Control`, no `max-age`, a `max-age` that is not delta-seconds, or a field value
 *   that does not parse: undefined.
 * - An `Age` that is not one delta-seconds is ignored: it can only shorten the lifetime, so
 *   ignoring it never trusts the response for longer than its `max-age`.
 */
export function responseLifetimeSeconds(cacheControl: string | null, age: string | null): number | undefined {
  if (cacheControl === null) return undefined;
  const directives = parseCacheControl(cacheControl);
  if (directives === undefined) return undefined;
  if (directives.some((d) => d.name === 'no-store' || d.name === 'no-cache')) return 0;
  const maxAges = directives.filter((d) => d.name === 'max-age').map((d) => deltaSeconds(d.value));
  if (maxAges.length === 0 || maxAges.some((v) => v === undefined)) return undefined;
  const maxAge = maxAges[0]!;
  if (maxAges.some((v) => v !== maxAge)) return 0;
  const ageSeconds = age === null ? undefined : deltaSeconds(age.trim());
  return Math.max(0, maxAge - (ageSeconds ?? 0));
}
