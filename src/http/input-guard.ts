import { isUtf8 } from 'node:buffer';
import { unescape as unescapeLeniently } from 'node:querystring';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { AppError, type InvalidParam } from '../errors/app-error.ts';
import type { RouteSpec } from './api-registry.ts';
import { assertUtf8Body } from '../verifier/strict-json.ts';

/**
 * Control characters are refused in one place, before any router, session lookup or
 * counter runs: PostgreSQL cannot store NUL in text ("invalid byte sequence for encoding
 * UTF8: 0x00", a 500 — possibly after an attempt was already charged), and no identifier,
 * name, filter or code we accept can contain a control character.
 *
 *   - NUL (U+0000) is refused everywhere, passwords included.
 *   - In JSON and form bodies, the other C0 characters are refused too, except TAB, LF and
 *     CR (multi-line text such as a policy description) and except in password fields,
 *     which may hold whatever a password manager produced.
 *   - Query parameters and path segments refuse every C0 character and DEL; a query
 *     parameter or path segment that is not valid percent-encoded UTF-8 is refused here too,
 *     naming the parameter.
 *   - Basic client credentials holding one are malformed credentials: the same 401
 *     `invalid_client` as any other bad client authentication (http/client-auth.ts), so
 *     client authentication keeps its one answer for every failure.
 *   - A cookie holding one is ignored (dropped), as a forged cookie would be.
 *
 * (The per-address request budget, http/rate-limit.ts, runs before this and counts such a
 * request like any other: it is keyed by the client's address, not by anything it sent.)
 *
 * Text must also be Unicode that survives storage unchanged:
 *
 *   - A JSON or form body in another encoding — a declared charset other than utf-8, a byte
 *     order mark (UTF-8's included), UTF-7's signature, or JSON that starts like UTF-16/32 —
 *     is 415 `unsupported_media_type` (RFC 8259 §8.1), before it is decoded.
 *   - A JSON or form body that is not valid UTF-8 is 400 `invalid_json` / `invalid_request`
 *     (pointer ""), before it is parsed: the parser would silently turn the bad bytes into
 *     U+FFFD, so two different inputs would become one value (`refuseMalformedUtf8`).
 *   - A body string or field name holding a lone surrogate (JSON `"\ud800"`, which parses
 *     but is not Unicode) is refused, passwords included: both databases store UTF-8, so it would
 *     come back as U+FFFD — a different value from the one hashed, compared or audited (an
 *     audit row's hash is computed over the string as sent; stored as U+FFFD, its row would
 *     read as tampered with).
 *
 * The answer is 400 `validation_failed`; `invalid_params[].pointer` names the field: a
 * JSON pointer into the body, `/<name>` for a query or path parameter (the detail says
 * which part of the request).
 */

// biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find them
const ANY_CONTROL = /[\u0000-\u001f\u007f]/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find them
const BODY_CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f]/;
const NUL = '\u0000';
const LONE_SURROGATE = 'must be Unicode text (found a lone surrogate)';
const MAX_REPORTED = 20;

/** Body fields whose value is a password: only NUL is refused there. */
function isPasswordField(key: string): boolean {
  return /password|passphrase/i.test(key);
}

function pointerOf(path: readonly (string | number)[]): string {
  return path.map((p) => `/${String(p).replaceAll('~', '~0').replaceAll('/', '~1')}`).join('');
}

function describeChar(value: string, re: RegExp): string {
  const m = re.exec(value);
  const code = m?.[0].codePointAt(0) ?? 0;
  return `U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** Every field of a parsed body holding a forbidden character (iterative: bodies may nest deeply). */
function bodyIssues(body: unknown): InvalidParam[] {
  const out: InvalidParam[] = [];
  const stack: { value: unknown; path: (string | number)[]; password: boolean }[] = [{ value: body, path: [], password: false }];
  while (stack.length > 0 && out.length < MAX_REPORTED) {
    const { value, path, password } = stack.pop() as (typeof stack)[number];
    if (typeof value === 'string') {
      if (value.includes(NUL)) out.push({ pointer: pointerOf(path), reason: 'must not contain NUL (U+0000)' });
      else if (!value.isWellFormed()) out.push({ pointer: pointerOf(path), reason: LONE_SURROGATE });
      else if (!password && BODY_CONTROL.test(value)) {
        out.push({ pointer: pointerOf(path), reason: `must not contain control characters (found ${describeChar(value, BODY_CONTROL)})` });
      }
    } else if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i -= 1) stack.push({ value: value[i], path: [...path, i], password });
    } else if (typeof value === 'object' && value !== null) {
      const entries = Object.entries(value as Record<string, unknown>);
      for (let i = entries.length - 1; i >= 0; i -= 1) {
        const [key, child] = entries[i] as [string, unknown];
        if (ANY_CONTROL.test(key) || !key.isWellFormed()) {
          out.push({ pointer: pointerOf([...path, key.toWellFormed()]), reason: ANY_CONTROL.test(key) ? 'field names must not contain control characters' : LONE_SURROGATE });
          continue;
        }
        stack.push({ value: child, path: [...path, key], password: password || isPasswordField(key) });
      }
    }
  }
  return out;
}

function queryIssues(query: unknown): InvalidParam[] {
  const out: InvalidParam[] = [];
  if (typeof query !== 'object' || query === null) return out;
  for (const [key, value] of Object.entries(query as Record<string, unknown>)) {
    const values = Array.isArray(value) ? value : [value];
    if (ANY_CONTROL.test(key) || values.some((v) => typeof v === 'string' && ANY_CONTROL.test(v))) {
      out.push({ pointer: pointerOf([key]), reason: 'query parameters must not contain control characters' });
    }
    if (out.length >= MAX_REPORTED) break;
  }
  return out;
}

/**
 * Query parameters whose raw name or value is not percent-encoded UTF-8 (`%`, `%ZZ`, `%FF`):
 * the query parser decodes them to U+FFFD or keeps them literally, so they are refused here,
 * naming the parameter.
 */
function rawQueryIssues(url: string): InvalidParam[] {
  const start = url.indexOf('?');
  if (start < 0 || !url.includes('%', start)) return [];
  const out: InvalidParam[] = [];
  for (const pair of url.slice(start + 1).split('&')) {
    const eq = pair.indexOf('=');
    const [key, value] = eq < 0 ? [pair, ''] : [pair.slice(0, eq), pair.slice(eq + 1)];
    if (decodeQueryPart(key) !== undefined && decodeQueryPart(value) !== undefined) continue;
    out.push({ pointer: pointerOf([unescapeLeniently(key.replaceAll('+', ' '))]), reason: 'query parameters must be percent-encoded UTF-8' });
    if (out.length >= MAX_REPORTED) break;
  }
  return out;
}

function decodeQueryPart(part: string): string | undefined {
  return decodeSegment(part.replaceAll('+', ' '));
}

function decodeSegment(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}

/** The name of the route parameter at segment `index` of `path`, if a registered route matches. */
function parameterName(routes: readonly RouteSpec[], method: string, segments: string[], index: number): string | undefined {
  let fallback: string | undefined;
  for (const route of routes) {
    const pattern = route.path.split('/');
    if (pattern.length !== segments.length) continue;
    if (!pattern.every((p, i) => p.startsWith(':') || p === segments[i])) continue;
    const name = pattern[index]?.startsWith(':') === true ? (pattern[index] as string).slice(1) : undefined;
    if (name === undefined) continue;
    if (route.method === method) return name;
    fallback ??= name;
  }
  return fallback;
}

function pathIssues(req: Request, routes: readonly RouteSpec[]): InvalidParam[] {
  const segments = req.path.split('/');
  const out: InvalidParam[] = [];
  segments.forEach((segment, index) => {
    const decoded = decodeSegment(segment);
    if (decoded !== undefined && !ANY_CONTROL.test(decoded)) return;
    // Undecodable (`%`, `%ZZ`, `%E0%A4`): express would answer a bare 400 naming nothing.
    const what = decoded === undefined ? 'must be percent-encoded UTF-8' : 'must not contain control characters';
    const name = parameterName(routes, req.method.toLowerCase(), segments, index);
    out.push(name === undefined ? { pointer: '', reason: `path segment ${index} ${what}` } : { pointer: pointerOf([name]), reason: `path parameters ${what}` });
  });
  return out;
}

function dropBadCookies(req: Request): void {
  const cookies = req.cookies as Record<string, unknown> | undefined;
  if (cookies === undefined || cookies === null) return;
  for (const [name, value] of Object.entries(cookies)) {
    if (ANY_CONTROL.test(name) || (typeof value === 'string' && ANY_CONTROL.test(value))) delete cookies[name];
  }
}

/**
 * The body parsers' `verify` hook, on the raw bytes before they are decoded. JSON and
 * urlencoded bodies must be UTF-8 (RFC 8259 §8.1; HTML forms are sent in the page's
 * encoding, which is UTF-8): a declared charset other than utf-8, or a byte order mark, is
 * 415 `unsupported_media_type` (verifier/strict-json.ts `assertUtf8Body`; the JSON reader
 * checks it first); bytes that are not valid UTF-8 are 400 `invalid_json` / `invalid_request`.
 */
export function refuseMalformedUtf8(req: Request, _res: Response, buf: Buffer): void {
  const form = req.is('application/x-www-form-urlencoded') !== false;
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(req.get('content-type') ?? '')?.[1]?.toLowerCase();
  assertUtf8Body(buf, charset, !form);
  if (isUtf8(buf)) return;
  throw Object.assign(new Error('body is not valid UTF-8'), { type: MALFORMED_UTF8, form });
}

/** The `type` of the body parsers' error for such a body (http/error-handler.ts answers it). */
export const MALFORMED_UTF8 = 'entity.utf8.invalid';

/**
 * The middleware; `routes` is read at request time (the API registry fills up after the
 * middleware is installed) to name path parameters.
 */
export function refuseControlCharacters(routes: readonly RouteSpec[]): RequestHandler {
  return (req: Request, _res: Response, next: NextFunction): void => {
    const checks: [InvalidParam[], string][] = [
      [pathIssues(req, routes), 'The request path is invalid.'],
      [[...queryIssues(req.query), ...rawQueryIssues(req.url)], 'The request query is invalid.'],
      [bodyIssues(req.body), 'The request body is invalid.'],
    ];
    for (const [issues, detail] of checks) {
      if (issues.length > 0) throw new AppError('validation_failed', { detail, invalidParams: issues });
    }
    dropBadCookies(req);
    next();
  };
}
