import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';

/**
 * JSON without duplicate member names.
 *
 * RFC 8259 §4 only says names SHOULD be unique, and JSON.parse keeps the last of
 * `{"amount":"1.00","amount":"9999.00"}`; another parser (the relying service's, a WAF, a log
 * pipeline) may keep the first, so two parties would read different amounts from the same
 * bytes. Everything that reads JSON from outside here refuses such text instead: the
 * gateway's and the payment-code service's request bodies, client-assertion JWTs and step-up
 * tokens. It lives in the verifier because relying services embed it too (the verifier
 * imports nothing from the gateway; the gateway may import it).
 */

interface Container {
  object: boolean;
  /** Arrays: the index of the current element; objects: the number of members seen. */
  index: number;
  /** Objects: the name of the current member. */
  name: string;
  /** Objects: the names seen so far, made on the second member (most objects here are small and many have one member). */
  names: Set<string> | undefined;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;

/** The index of the quote that closes the string opened at `start` (text.length when there is none). */
function endOfString(text: string, start: number): number {
  let end = text.indexOf('"', start + 1);
  while (end > 0) {
    // Escaped when preceded by an odd run of backslashes; each run is looked at once, so the scan stays O(n).
    let k = end - 1;
    while (text.charCodeAt(k) === BACKSLASH) k -= 1;
    if ((end - 1 - k) % 2 === 0) return end;
    end = text.indexOf('"', end + 1);
  }
  return text.length;
}

function escapePointerToken(token: string): string {
  return token.replaceAll('~', '~0').replaceAll('/', '~1');
}

function pointerOf(stack: readonly Container[], name: string): string {
  let pointer = '';
  for (let i = 0; i < stack.length - 1; i += 1) {
    const c = stack[i] as Container;
    pointer += `/${c.object ? escapePointerToken(c.name) : String(c.index)}`;
  }
  return `${pointer}/${escapePointerToken(name)}`;
}

/**
 * The JSON pointer (RFC 6901) of the first member whose name repeats an earlier member of the
 * same object (`/context/amount`), or undefined when there is none. Names are compared after
 * unescaping (`"amount"` and `"\u0061mount"` are the same name). One pass over the text.
 *
 * `text` is meant to be JSON that JSON.parse accepted: the scan trusts the structure and does
 * not validate it. On other text it still ends and never throws, but its answer means nothing.
 */
export function findDuplicateMember(text: string): string | undefined {
  const stack: Container[] = [];
  let top: Container | undefined;
  let expectName = false;
  const length = text.length;
  let i = 0;
  while (i < length) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      const end = endOfString(text, i);
      if (expectName && top !== undefined) {
        const raw = text.slice(i + 1, end);
        let name = raw;
        if (raw.includes('\\')) {
          try {
            name = JSON.parse(text.slice(i, end + 1)) as string;
          } catch {
            return undefined;
          }
        }
        if (top.names === undefined) {
          if (top.index > 0) {
            if (name === top.name) return pointerOf(stack, name);
            top.names = new Set([top.name, name]);
          }
        } else {
          if (top.names.has(name)) return pointerOf(stack, name);
          top.names.add(name);
        }
        top.index += 1;
        top.name = name;
        expectName = false;
      }
      i = end + 1;
      continue;
    }
    if (c === OPEN_OBJECT) {
      top = { object: true, index: 0, name: '', names: undefined };
      stack.push(top);
      expectName = true;
    } else if (c === OPEN_ARRAY) {
      top = { object: false, index: 0, name: '', names: undefined };
      stack.push(top);
      expectName = false;
    } else if (c === COMMA) {
      if (top?.object === true) expectName = true;
      else if (top !== undefined) top.index += 1;
    } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
      stack.pop();
      top = stack[stack.length - 1];
      expectName = false;
    }
    i += 1;
  }
  return undefined;
}

// fatal: bad UTF-8 is left to jose to refuse, not scanned as U+FFFD.
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A duplicate member in the protected header or the payload of a compact JWS/JWT (both are
 * JSON.parse'd by jose, which keeps the last of two `"sub"`s or `"alg"`s, as RFC 7515 §4 and
 * RFC 7519 §4 allow). Segments that do not decode to UTF-8 are passed over: jose refuses them.
 */
export function jwsDuplicateMember(compact: string): { part: 'header' | 'payload'; pointer: string } | undefined {
  const firstDot = compact.indexOf('.');
  const secondDot = compact.indexOf('.', firstDot + 1);
  if (firstDot < 0 || secondDot < 0) return undefined;
  const parts = [
    ['header', compact.slice(0, firstDot)],
    ['payload', compact.slice(firstDot + 1, secondDot)],
  ] as const;
  for (const [part, encoded] of parts) {
    let text: string;
    try {
      text = UTF8.decode(Buffer.from(encoded, 'base64url'));
    } catch {
      continue;
    }
    const pointer = findDuplicateMember(text);
    if (pointer !== undefined) return { part, pointer };
  }
  return undefined;
}

/** The `type` of the error strictJsonBody passes on for a duplicate member; it carries `pointer`. */
export const DUPLICATE_MEMBER = 'entity.duplicate.member';
/** The `type` of its error for text that is not JSON (the same as body-parser's). */
export const JSON_PARSE_FAILED = 'entity.parse.failed';

export interface StrictJsonBodyOptions {
  /** The body limit in bytes, after decompression. */
  limit: number;
  /** body-parser's `verify` hook: sees the raw bytes before they are decoded. */
  verify?: (req: Request, res: Response, buf: Buffer, encoding: string) => void;
}

const JSON_TYPES = ['application/json', 'application/*+json'];

/** The `type` of the error for a body that is not in UTF-8 by its declared charset or its first bytes (415). */
export const NOT_UTF8 = 'charset.unsupported';

// Byte order marks (and UTF-7's signature), longest first: FF FE 00 00 is UTF-32LE, not UTF-16LE.
const BOMS: readonly [string, readonly number[]][] = [
  ['UTF-32BE', [0x00, 0x00, 0xfe, 0xff]],
  ['UTF-32LE', [0xff, 0xfe, 0x00, 0x00]],
  ['UTF-8', [0xef, 0xbb, 0xbf]],
  ['UTF-16BE', [0xfe, 0xff]],
  ['UTF-16LE', [0xff, 0xfe]],
];
// UTF-7's signature: "+/v" and one of 8 9 + / (RFC 2152).
const UTF7_SIGNATURE = /^\+\/v[89+/]/;

function notUtf8(reason: string): Error {
  return Object.assign(new Error(reason), { type: NOT_UTF8, status: 415, reason });
}

/**
 * RFC 8259 §8.1: JSON exchanged between systems is UTF-8, and a sender must not add a byte
 * order mark. Refused with 415 (type NOT_UTF8), before the body is decoded: a declared
 * charset other than utf-8 (`utf8` is taken as its common spelling), and a body that starts
 * with a byte order mark — UTF-8's too: a parser may ignore it, but then two byte strings
 * would be one JSON text, and a conforming sender never adds one — or with UTF-7's
 * signature. A JSON text starts with an ASCII character, so a NUL among its first two bytes
 * is UTF-16 or UTF-32 without a mark (the detection of RFC 4627 §3): refused the same way.
 * `json: false` (urlencoded forms) skips that last check; their NUL is refused as a control
 * character.
 */
export function assertUtf8Body(buf: Buffer, charset: string | undefined, json: boolean): void {
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') throw notUtf8(`the body must be UTF-8 (declared charset "${charset}")`);
  for (const [name, bom] of BOMS) {
    if (buf.length >= bom.length && bom.every((b, i) => buf[i] === b)) throw notUtf8(`the body must be UTF-8 without a byte order mark (found the ${name} byte order mark)`);
  }
  if (UTF7_SIGNATURE.test(buf.subarray(0, 4).toString('latin1'))) throw notUtf8('the body must be UTF-8 (found the UTF-7 signature)');
  if (json && buf.length >= 2 && (buf[0] === 0 || buf[1] === 0)) throw notUtf8('the body must be UTF-8 (it looks like UTF-16 or UTF-32)');
}
// JSON whitespace only (RFC 8259 §2), as body-parser's strict mode.
const FIRST_NON_WHITESPACE = /[^ \t\n\r]/;

function parseError(message: string): Error {
  return Object.assign(new Error(message), { type: JSON_PARSE_FAILED, status: 400 });
}

/**
 * express.json({strict: true}) that also refuses duplicate member names. body-parser decodes
 * the body (charset, gzip, limit) as before, and the text checked for duplicates is exactly
 * the text JSON.parse reads, so the two cannot disagree. An empty body is `{}`, as with
 * express.json; a body whose first character is not `{` or `[` is not accepted.
 * Errors go to `next` with a `type`: `entity.parse.failed` (as body-parser's),
 * `entity.duplicate.member` (with `pointer`), and body-parser's own for size, charset and
 * encoding.
 */
export function strictJsonBody(options: StrictJsonBodyOptions): RequestHandler {
  const verify = options.verify;
  const read = express.text({
    limit: options.limit,
    type: JSON_TYPES,
    verify: (req, res, buf, encoding) => {
      assertUtf8Body(buf, encoding, true);
      verify?.(req as Request, res as Response, buf, encoding);
    },
  });
  return (req: Request, res: Response, next: NextFunction): void => {
    read(req, res, (err?: unknown) => {
      if (err !== undefined && err !== null) {
        next(err);
        return;
      }
      const text: unknown = req.body;
      // Not a JSON content type, or no body: nothing was read.
      if (typeof text !== 'string') {
        next();
        return;
      }
      const first = FIRST_NON_WHITESPACE.exec(text)?.[0];
      if (first === undefined && text.length === 0) {
        req.body = {};
        next();
        return;
      }
      if (first !== '{' && first !== '[') {
        next(parseError('the body must be a JSON object or array'));
        return;
      }
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch (parseFailure) {
        next(parseError((parseFailure as Error).message));
        return;
      }
      const pointer = findDuplicateMember(text);
      if (pointer !== undefined) {
        next(Object.assign(new Error('duplicate member name'), { type: DUPLICATE_MEMBER, status: 400, pointer }));
        return;
      }
      req.body = value;
      next();
    });
  };
}
