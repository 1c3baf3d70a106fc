import { AppError } from '../errors/app-error.ts';
import { base32Decode } from '../otp/base32.ts';
import { checkTokenParameters, looksLikeSeed, normaliseSerial, TOKEN_ALGORITHMS, type TokenAlgorithm, type TokenProblem, type TokenSpec } from './token-spec.ts';

/**
 * The simple vendor CSV: one token per line,
 *
 *   serial,seed,type,digits,counter|period,algorithm
 *
 * `type` is hotp (event) or totp (time); the fifth column is the HOTP start counter or the
 * TOTP time step in seconds; `algorithm` is SHA1 (default when empty), SHA256, SHA512 or SM3
 * (GM/T 0021: hotp → event mode C, totp → time mode T). Seeds are hex or base32; a `hex:` or
 * `base32:` prefix removes any doubt (otherwise an even-length string of hex digits is hex).
 * Blank lines and lines starting with `#` are skipped, as is a first line starting with
 * `serial`. The file is plain text: the seeds in it are not protected.
 *
 * A problem names the line and the column, never a field's value: in a file whose columns
 * are out of order any field — the serial too — may be a seed, and the report goes back to
 * the uploader's screen, the CLI's output and the import history. Problems carry no serial.
 */

const COLUMNS = ['serial', 'seed', 'type', 'digits', 'counter|period', 'algorithm'] as const;

function at(lineNo: number, column: number): string {
  return `line ${lineNo}, column ${column} (${COLUMNS[column - 1]})`;
}

export interface ReadCsvOptions {
  now: Date;
  maxTokens: number;
}

function seedOf(raw: string): Buffer | undefined {
  const s = raw.trim();
  const lower = s.toLowerCase();
  if (lower.startsWith('hex:')) return hexOf(s.slice(4));
  if (lower.startsWith('base32:')) return base32Decode(s.slice(7));
  return hexOf(s) ?? base32Decode(s);
}

function hexOf(s: string): Buffer | undefined {
  const clean = s.replace(/\s+/g, '');
  return /^(?:[0-9a-fA-F]{2})+$/.test(clean) ? Buffer.from(clean, 'hex') : undefined;
}

function unquote(field: string): string {
  const f = field.trim();
  return f.length >= 2 && f.startsWith('"') && f.endsWith('"') ? f.slice(1, -1).trim() : f;
}

export function readCsv(data: string, options: ReadCsvOptions): { tokens: TokenSpec[]; problems: TokenProblem[] } {
  const lines = data.replace(/^\uFEFF/, '').split(/\r?\n/);
  const tokens: TokenSpec[] = [];
  const problems: TokenProblem[] = [];
  /** Normalised serial → the line it was first seen on. */
  const seen = new Map<string, number>();
  let index = -1;
  let first = true;
  for (const [lineNo, line] of lines.entries()) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    if (first && /^"?serial"?\s*(,|$)/i.test(trimmed)) {
      first = false;
      continue;
    }
    first = false;
    index += 1;
    if (index >= options.maxTokens) {
      throw new AppError('token_file_too_large', { detail: `The file holds more than ${options.maxTokens} tokens; at most that many are accepted per import.` });
    }
    const fields = trimmed.split(',').map(unquote);
    const lineNumber = lineNo + 1;
    const refuse = (code: TokenProblem['code'], where: string, reason: string) => {
      problems.push({ index, serial: null, code, reason: `${where}: ${reason}` });
    };
    if (fields.length < 5 || fields.length > 6) {
      refuse('invalid_parameter', `line ${lineNumber}`, `expected 5 or 6 fields (serial,seed,type,digits,counter|period,algorithm), found ${fields.length}`);
      continue;
    }
    const [rawSerial = '', seedText = '', typeText = '', digitsText = '', fifth = '', algorithmText = ''] = fields;
    if (rawSerial === '') {
      refuse('missing_serial', at(lineNumber, 1), 'the serial is empty');
      continue;
    }
    const serial = normaliseSerial(rawSerial);
    if (serial === undefined) {
      refuse('invalid_serial', at(lineNumber, 1), 'a serial has 1–64 letters, digits, ".", "_" or "-"');
      continue;
    }
    if (looksLikeSeed(rawSerial)) {
      refuse('invalid_serial', at(lineNumber, 1), 'this looks like a seed, not a serial: are the columns in the order serial,seed,type,digits,counter|period,algorithm?');
      continue;
    }
    const firstLine = seen.get(serial);
    if (firstLine !== undefined) {
      refuse('duplicate_serial', at(lineNumber, 1), `the same serial as line ${firstLine}`);
      continue;
    }
    seen.set(serial, lineNumber);
    const type = typeText.toLowerCase();
    if (type !== 'hotp' && type !== 'totp') {
      refuse('unsupported_algorithm', at(lineNumber, 3), typeText === '' ? 'the type is empty; it is hotp or totp' : 'the type is hotp or totp');
      continue;
    }
    const algorithm = (algorithmText === '' ? 'SHA1' : algorithmText.toUpperCase().replace(/^HMAC-?/, '').replace('-', '')) as TokenAlgorithm;
    if (!TOKEN_ALGORITHMS.includes(algorithm)) {
      refuse('unsupported_algorithm', at(lineNumber, 6), 'the algorithm is SHA1, SHA256, SHA512 or SM3 (empty: SHA1)');
      continue;
    }
    if (!/^\d{1,2}$/.test(digitsText)) {
      refuse('invalid_parameter', at(lineNumber, 4), 'the digits are a non-negative integer');
      continue;
    }
    if (!/^\d{1,16}$/.test(fifth)) {
      refuse('invalid_parameter', at(lineNumber, 5), 'the counter (hotp) or time step in seconds (totp) is a non-negative integer');
      continue;
    }
    const seed = seedOf(seedText);
    if (seed === undefined || seed.length === 0) {
      refuse('missing_secret', at(lineNumber, 2), 'the seed is neither hex nor base32');
      continue;
    }
    const spec = {
      kind: type,
      algorithm,
      digits: Number(digitsText),
      counter: type === 'hotp' ? Number(fifth) : 0,
      periodSeconds: type === 'totp' ? Number(fifth) : 0,
      driftSteps: 0,
      challengeLength: null,
      validFrom: null,
      validUntil: null,
      manufacturer: '',
      model: '',
    } as const;
    const bad = checkTokenParameters({ ...spec, seedLength: seed.length }, options.now);
    if (bad !== undefined) {
      seed.fill(0);
      refuse(bad.code, `line ${lineNumber}`, bad.reason);
      continue;
    }
    tokens.push({ ...spec, index, serial, seed });
  }
  return { tokens, problems };
}
