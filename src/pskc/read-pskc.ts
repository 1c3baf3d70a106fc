import { AppError } from '../errors/app-error.ts';
import { type CipherName, checkValueMac, cipherOf, DecryptFailed, decryptValue, type MacName, macOf, type Pbkdf2Params, pbkdf2Key, type PrfName } from './pskc-crypto.ts';
import { checkTokenParameters, looksLikeSeed, normaliseSerial, reportableSerial, type TokenAlgorithm, type TokenKind, type TokenProblem, type TokenProblemCode, type TokenSpec } from './token-spec.ts';
import { attr, child, children, parseXml, text, textAt, XmlRefused, type XmlNode } from './xml-tree.ts';

/**
 * RFC 6030 (PSKC 1.0) reader: plain values, pre-shared-key encryption (aes128/192/256-cbc
 * with HMAC ValueMAC, kw-aes128/192/256 key wrap) and PBKDF2 password-based encryption.
 *
 * File-level problems throw AppError: `token_file_invalid` (not XML, a DTD, not PSKC, an
 * unsupported cipher), `token_file_key_required` (encrypted, but no / the wrong kind of key
 * given), `token_file_decryption_failed` (wrong key, wrong password, or any MAC that does not
 * verify: deliberately one error). Problems of single tokens are collected with their serial
 * so the operator sees all of them at once; the caller imports nothing when there is any.
 *
 * No problem or error repeats a value from the file (an algorithm URI, a suite, a usage…)
 * unless it is a well-formed URI or a word of PSKC's own vocabulary: a file with its
 * elements mixed up may hold a seed anywhere, and these reports reach the uploader's screen,
 * the CLI's output and the import history. A serial is repeated only when it is a valid
 * serial that does not look like a seed (token-spec.ts reportableSerial).
 */

export const PSKC_NAMESPACE = 'urn:ietf:params:xml:ns:keyprov:pskc';

export type PskcEncryption = 'none' | 'psk' | 'pbkdf2';

export interface ReadPskcOptions {
  /** PBKDF2 files. */
  password?: string | undefined;
  /** Pre-shared-key files. */
  psk?: Buffer | undefined;
  now: Date;
  /** More KeyPackages than this: the whole file is refused. */
  maxTokens: number;
  /** A file asking for more PBKDF2 iterations is refused (it would pin the CPU). */
  maxPbkdf2Iterations: number;
}

export interface ReadResult {
  tokens: TokenSpec[];
  problems: TokenProblem[];
  encryption: PskcEncryption;
}

/**
 * A value from the file as a report may quote it: a URI (an algorithm identifier), or one of
 * the words PSKC defines for that place; anything else is described, not repeated.
 */
function shown(value: string | undefined, words: readonly string[] = []): string {
  if (value === undefined || value.trim() === '') return '(none)';
  const v = value.trim();
  if (words.some((w) => w.toLowerCase() === v.toLowerCase())) return v;
  if (/^(?:urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:|https?:\/\/)[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]{1,200}$/.test(v) && !looksLikeSeed(v.replace(/^.*[:#/]/, ''))) return v;
  return 'a value that is not repeated here';
}

/** Words of RFC 6030 (and of vendors' files) that are safe to repeat in a report. */
const ENCODINGS = ['DECIMAL', 'HEXADECIMAL', 'ALPHANUMERIC', 'BASE64', 'BINARY'];
const KEY_USAGES = ['OTP', 'CR', 'Encrypt', 'Integrity', 'Verify', 'Unlock', 'Decrypt', 'KeyWrap', 'Unwrap', 'Derive', 'Generate'];
const PIN_MODES = ['Local', 'Prepend', 'Append', 'Algorithmic'];
const SUITES = ['SHA1', 'SHA-1', 'SHA224', 'SHA-224', 'SHA256', 'SHA-256', 'SHA384', 'SHA-384', 'SHA512', 'SHA-512', 'MD5', 'SM3', 'HMAC-SHA1', 'HMAC-SHA224', 'HMAC-SHA256', 'HMAC-SHA384', 'HMAC-SHA512', 'HMAC-MD5', 'HMAC-SM3'];

function invalid(reason: string, pointer = ''): AppError {
  return new AppError('token_file_invalid', { detail: `Not an acceptable PSKC file: ${reason}.`, invalidParams: [{ pointer, reason }] });
}

function decryptionFailed(): AppError {
  return new AppError('token_file_decryption_failed');
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function base64(value: string | undefined, where: string): Buffer {
  const clean = (value ?? '').replace(/\s+/g, '');
  if (clean === '' || clean.length % 4 !== 0 || !BASE64.test(clean)) throw invalid(`${where} is not base64`, where);
  return Buffer.from(clean, 'base64');
}

/** A per-token problem, thrown inside one KeyPackage and collected by the loop. */
class TokenRefused extends Error {
  readonly code: TokenProblemCode;
  constructor(code: TokenProblemCode, reason: string) {
    super(reason);
    this.code = code;
  }
}

interface MacInfo {
  name: MacName;
  key: Buffer;
}

interface Crypto {
  key: Buffer;
  mac(): MacInfo | undefined;
}

function encryptedValueParts(node: XmlNode, where: string): { cipher: CipherName; value: Buffer } {
  const method = attr(child(node, 'EncryptionMethod'), 'Algorithm');
  const cipher = cipherOf(method);
  if (cipher === undefined) throw invalid(`unsupported encryption algorithm ${shown(method)}; supported: aes128-cbc, aes192-cbc, aes256-cbc, kw-aes128, kw-aes192, kw-aes256`, `${where}/EncryptionMethod`);
  return { cipher, value: base64(textAt(node, 'CipherData', 'CipherValue'), `${where}/CipherData/CipherValue`) };
}

/** The key the file's values are encrypted under: the pre-shared key, or PBKDF2 of the password. */
function encryptionKeyOf(container: XmlNode, options: ReadPskcOptions): { encryption: PskcEncryption; derive: () => Buffer } {
  const encryptionKey = child(container, 'EncryptionKey');
  if (encryptionKey === undefined) {
    return {
      encryption: 'none',
      derive: () => {
        throw invalid('a value is encrypted but the file names no EncryptionKey', '/KeyContainer/EncryptionKey');
      },
    };
  }
  const derived = child(encryptionKey, 'DerivedKey');
  if (derived === undefined) {
    if (options.psk === undefined) {
      throw new AppError('token_file_key_required', { detail: 'The file is encrypted with a pre-shared key: give the transport key (hex) the vendor sent separately.', invalidParams: [{ pointer: '/psk', reason: 'required for this file' }] });
    }
    const psk = options.psk;
    return { encryption: 'psk', derive: () => psk };
  }
  const method = child(derived, 'KeyDerivationMethod');
  const algorithm = attr(method, 'Algorithm') ?? '';
  if (!/#pbkdf2$/i.test(algorithm)) throw invalid(`unsupported key derivation ${shown(algorithm)}; only PBKDF2 is supported`, '/KeyContainer/EncryptionKey/DerivedKey/KeyDerivationMethod');
  if (options.password === undefined) {
    throw new AppError('token_file_key_required', { detail: 'The file is protected with a password (PBKDF2): give the password the vendor sent separately.', invalidParams: [{ pointer: '/password', reason: 'required for this file' }] });
  }
  const p = child(method, 'PBKDF2-params');
  const where = '/KeyContainer/EncryptionKey/DerivedKey/KeyDerivationMethod/PBKDF2-params';
  const salt = base64(textAt(p, 'Salt', 'Specified'), `${where}/Salt/Specified`);
  const iterations = Number(textAt(p, 'IterationCount'));
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > options.maxPbkdf2Iterations) {
    throw invalid(`PBKDF2 IterationCount must be 1..${options.maxPbkdf2Iterations}`, `${where}/IterationCount`);
  }
  const keyLengthText = textAt(p, 'KeyLength');
  const keyLength = keyLengthText === undefined ? 16 : Number(keyLengthText);
  if (!Number.isInteger(keyLength) || ![16, 24, 32].includes(keyLength)) throw invalid('PBKDF2 KeyLength must be 16, 24 or 32', `${where}/KeyLength`);
  const prfNode = child(p, 'PRF');
  const prfUri = attr(prfNode, 'Algorithm') ?? text(prfNode);
  const prf: PrfName | undefined = prfUri === undefined ? 'sha1' : macOf(prfUri);
  if (prf === undefined) throw invalid(`unsupported PBKDF2 PRF ${shown(prfUri)}`, `${where}/PRF`);
  const params: Pbkdf2Params = { salt, iterations, keyLength, prf };
  const password = options.password;
  return { encryption: 'pbkdf2', derive: () => pbkdf2Key(password, params) };
}

/**
 * The MAC algorithm and key, decrypted only when a ValueMAC must be checked. Without a
 * MACKey the encryption key is the MAC key (as pre-RFC drafts did). A MACMethod without an
 * Algorithm is tolerated as long as no value carries a MAC (python-pskc writes one for
 * key-wrapped files, whose values need none).
 */
function macOfContainer(container: XmlNode, key: Buffer): MacInfo | undefined {
  const method = child(container, 'MACMethod');
  if (method === undefined) return undefined;
  const algorithm = attr(method, 'Algorithm');
  if (algorithm === undefined) return undefined;
  const name = macOf(algorithm);
  if (name === undefined) throw invalid(`unsupported MAC algorithm ${shown(algorithm)}`, '/KeyContainer/MACMethod');
  const macKeyNode = child(method, 'MACKey');
  if (macKeyNode === undefined) return { name, key };
  const { cipher, value } = encryptedValueParts(macKeyNode, '/KeyContainer/MACMethod/MACKey');
  // A wrong key usually breaks the CBC padding here, sometimes not; either way it ends as
  // the same decryption failure (a garbage MAC key fails every ValueMAC).
  return { name, key: decryptValue(cipher, key, value) };
}

function algorithmOf(uri: string | undefined): TokenKind | undefined {
  const u = (uri ?? '').trim().toLowerCase();
  if (/(?:^|[:#/])hotp$/.test(u)) return 'hotp';
  if (/(?:^|[:#/])totp$/.test(u)) return 'totp';
  return undefined;
}

/** `AlgorithmParameters/Suite`: the hash (HMAC-SHA256, SHA512…) or GM/T 0021 SM3. */
function suiteOf(suite: string | undefined): TokenAlgorithm | undefined {
  if (suite === undefined || suite.trim() === '') return 'SHA1';
  const s = suite.trim().toUpperCase().replace(/^HMAC-?/, '').replace(/[-_\s]/g, '');
  if (s === 'SHA1') return 'SHA1';
  if (s === 'SHA256') return 'SHA256';
  if (s === 'SHA512') return 'SHA512';
  if (s === 'SM3' || s === 'GMT0021SM3' || s === 'SM3OTP') return 'SM3';
  return undefined;
}

const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})?$/;

function dateOf(value: string | undefined, what: string): Date | null {
  if (value === undefined || value === '') return null;
  const v = value.trim();
  if (!DATE_TIME.test(v)) throw new TokenRefused('invalid_parameter', `${what} is not an xs:dateTime`);
  // xs:dateTime without a zone is read as UTC.
  const ms = Date.parse(/(?:Z|[+-]\d{2}:\d{2})$/.test(v) ? v : `${v}Z`);
  if (Number.isNaN(ms)) throw new TokenRefused('invalid_parameter', `${what} is not a valid date`);
  return new Date(ms);
}

function later(a: Date | null, b: Date | null): Date | null {
  if (a === null) return b;
  if (b === null) return a;
  return a > b ? a : b;
}

function earlier(a: Date | null, b: Date | null): Date | null {
  if (a === null) return b;
  if (b === null) return a;
  return a < b ? a : b;
}

export function readPskc(data: string, options: ReadPskcOptions): ReadResult {
  let doc: XmlNode;
  try {
    doc = parseXml(data);
  } catch (err) {
    if (err instanceof XmlRefused) throw invalid(err.reason);
    throw err;
  }
  const container = child(doc, 'KeyContainer');
  if (container === undefined || children(doc, 'KeyContainer').length !== 1 || Object.keys(doc).length !== 1) throw invalid('the document element must be a PSKC KeyContainer', '/KeyContainer');
  // Prefixes are dropped by the parser; the namespace itself must still be PSKC's.
  if (!data.includes(PSKC_NAMESPACE)) throw invalid(`the document is not in the PSKC namespace ${PSKC_NAMESPACE}`, '/KeyContainer');
  const version = attr(container, 'Version');
  if (version !== '1.0') throw invalid(`PSKC Version must be 1.0, not ${shown(version, ['1.0', '1.1', '2.0'])}`, '/KeyContainer/@Version');
  if (child(container, 'Signature') !== undefined) {
    // An XML signature we cannot verify must not look verified.
    throw invalid('signed PSKC files are not supported; ask the vendor for an unsigned file protected with a transport key or password', '/KeyContainer/Signature');
  }

  const packages = children(container, 'KeyPackage');
  if (packages.length > options.maxTokens) {
    throw new AppError('token_file_too_large', { detail: `The file holds ${packages.length} tokens; at most ${options.maxTokens} are accepted per import.` });
  }

  const { encryption, derive } = encryptionKeyOf(container, options);
  let crypto: Crypto | undefined;
  const cryptoFor = (): Crypto => {
    if (crypto === undefined) {
      const key = derive();
      let mac: MacInfo | undefined | null = null;
      const c: Crypto = {
        key,
        mac: () => {
          if (mac === null) mac = macOfContainer(container, key);
          return mac;
        },
      };
      crypto = c;
      return c;
    }
    return crypto;
  };

  /** A Data element (Secret, Counter, …) as bytes: PlainValue, or EncryptedValue checked and decrypted. */
  const valueBytes = (node: XmlNode, where: string, plain: (s: string) => Buffer): Buffer | undefined => {
    const plainText = textAt(node, 'PlainValue');
    if (plainText !== undefined) return plain(plainText);
    const encrypted = child(node, 'EncryptedValue');
    if (encrypted === undefined) return undefined;
    const { cipher, value } = encryptedValueParts(encrypted, `${where}/EncryptedValue`);
    const c = cryptoFor();
    const macText = textAt(node, 'ValueMAC');
    if (macText === undefined) {
      // CBC has no integrity of its own: without a MAC a tampered seed would import silently.
      if (cipher.endsWith('-cbc')) throw invalid('an encrypted value has no ValueMAC', `${where}/ValueMAC`);
    } else {
      const mac = c.mac();
      if (mac === undefined) throw invalid('a ValueMAC is given but the file names no MAC algorithm', '/KeyContainer/MACMethod');
      checkValueMac(mac.name, mac.key, value, base64(macText, `${where}/ValueMAC`));
    }
    return decryptValue(cipher, c.key, value);
  };

  const integerOf = (node: XmlNode | undefined, where: string, what: string): number | undefined => {
    if (node === undefined) return undefined;
    const bytes = valueBytes(node, where, (s) => {
      if (!/^-?\d{1,16}$/.test(s.trim())) throw new TokenRefused('invalid_parameter', `${what} is not an integer`);
      return Buffer.from(s.trim(), 'utf8');
    });
    if (bytes === undefined) return undefined;
    if (node !== undefined && textAt(node, 'PlainValue') !== undefined) return Number(bytes.toString('utf8'));
    // Encrypted integers are big-endian unsigned (as python-pskc writes them).
    if (bytes.length > 7) throw new TokenRefused('invalid_parameter', `${what} is out of range`);
    let n = 0;
    for (const b of bytes) n = n * 256 + b;
    return n;
  };

  const tokens: TokenSpec[] = [];
  const problems: TokenProblem[] = [];
  const seen = new Set<string>();

  packages.forEach((pkg, index) => {
    const where = `/KeyContainer/KeyPackage/${index}`;
    const device = child(pkg, 'DeviceInfo');
    const keys = children(pkg, 'Key');
    const rawSerial = textAt(device, 'SerialNo') ?? attr(keys[0], 'Id') ?? null;
    const problem = (code: TokenProblemCode, reason: string): void => {
      problems.push({ index, serial: reportableSerial(rawSerial), code, reason });
    };
    let secret: Buffer | undefined;
    try {
      if (rawSerial === null || rawSerial.trim() === '') throw new TokenRefused('missing_serial', 'the token has no DeviceInfo/SerialNo (nor a Key Id)');
      const serial = normaliseSerial(rawSerial);
      if (serial === undefined) throw new TokenRefused('invalid_serial', 'a serial has 1–64 letters, digits, ".", "_" or "-"');
      if (looksLikeSeed(rawSerial)) throw new TokenRefused('invalid_serial', 'DeviceInfo/SerialNo (or the Key Id) looks like a seed, not a serial');
      if (seen.has(serial)) throw new TokenRefused('duplicate_serial', 'the serial appears more than once in the file');
      seen.add(serial);
      if (keys.length !== 1) throw new TokenRefused('several_keys', `a token must hold exactly one key, this one holds ${keys.length}`);
      const key = keys[0] as XmlNode;
      const keyWhere = `${where}/Key/0`;

      const algorithmUri = attr(key, 'Algorithm');
      const kind = algorithmOf(algorithmUri);
      if (kind === undefined) throw new TokenRefused('unsupported_algorithm', `key algorithm ${shown(algorithmUri)} is not HOTP or TOTP`);
      const params = child(key, 'AlgorithmParameters');
      const suite = textAt(params, 'Suite');
      const algorithm = suiteOf(suite);
      if (algorithm === undefined) throw new TokenRefused('unsupported_algorithm', `suite ${shown(suite, SUITES)} is not SHA1, SHA256, SHA512 or SM3`);
      const response = child(params, 'ResponseFormat');
      const encoding = attr(response, 'Encoding');
      if (encoding !== undefined && encoding.toUpperCase() !== 'DECIMAL') throw new TokenRefused('unsupported_algorithm', `response encoding ${shown(encoding, ENCODINGS)} is not DECIMAL`);
      if (attr(response, 'CheckDigits') === 'true') throw new TokenRefused('unsupported_algorithm', 'responses with a Luhn check digit are not supported');
      const lengthText = attr(response, 'Length');
      const digits = lengthText === undefined ? 6 : /^\d{1,2}$/.test(lengthText) ? Number(lengthText) : Number.NaN;
      // GM/T 0021 challenge-response: the keypad takes a decimal challenge; we ask for Max
      // digits (what the token is built for; checkTokenParameters bounds it, SM3 only).
      const challengeFormat = child(params, 'ChallengeFormat');
      let challengeLength: number | null = null;
      if (challengeFormat !== undefined) {
        const challengeEncoding = (attr(challengeFormat, 'Encoding') ?? '').toUpperCase();
        if (challengeEncoding !== 'DECIMAL') throw new TokenRefused('unsupported_algorithm', `challenge encoding ${shown(challengeEncoding, ENCODINGS)} is not DECIMAL`);
        if (attr(challengeFormat, 'CheckDigits') === 'true') throw new TokenRefused('unsupported_algorithm', 'challenges with a check digit are not supported');
        const maxText = attr(challengeFormat, 'Max') ?? '';
        const minText = attr(challengeFormat, 'Min') ?? maxText;
        challengeLength = /^\d{1,2}$/.test(maxText) ? Number(maxText) : Number.NaN;
        if (!/^\d{1,2}$/.test(minText) || Number(minText) > challengeLength) throw new TokenRefused('invalid_parameter', 'ChallengeFormat Min/Max are not a range of lengths');
      }

      const policy = child(key, 'Policy');
      const usages = children(policy, 'KeyUsage').map((u) => (text(u) ?? '').trim());
      if (usages.length > 0 && !usages.includes('OTP')) throw new TokenRefused('unsupported_policy', `the key may only be used for ${usages.map((u) => shown(u, KEY_USAGES)).join(', ')}, not OTP`);
      const pinMode = attr(child(policy, 'PINPolicy'), 'PINUsageMode');
      if (pinMode !== undefined && pinMode !== 'Local') throw new TokenRefused('unsupported_policy', `PIN usage mode ${shown(pinMode, PIN_MODES)} needs a server-side PIN, which is not supported (only Local)`);
      const validFrom = later(dateOf(textAt(device, 'StartDate'), 'DeviceInfo/StartDate'), dateOf(textAt(policy, 'StartDate'), 'Policy/StartDate'));
      const validUntil = earlier(dateOf(textAt(device, 'ExpiryDate'), 'DeviceInfo/ExpiryDate'), dateOf(textAt(policy, 'ExpiryDate'), 'Policy/ExpiryDate'));

      const data = child(key, 'Data');
      const secretNode = child(data, 'Secret');
      secret = secretNode === undefined ? undefined : valueBytes(secretNode, `${keyWhere}/Data/Secret`, (s) => base64(s, `${keyWhere}/Data/Secret/PlainValue`));
      if (secret === undefined || secret.length === 0) throw new TokenRefused('missing_secret', 'the key has no Data/Secret');
      const counter = integerOf(child(data, 'Counter'), `${keyWhere}/Data/Counter`, 'Counter') ?? 0;
      const interval = integerOf(child(data, 'TimeInterval'), `${keyWhere}/Data/TimeInterval`, 'TimeInterval');
      const drift = integerOf(child(data, 'TimeDrift'), `${keyWhere}/Data/TimeDrift`, 'TimeDrift') ?? 0;
      // GM/T 0021 tokens change every 60 s unless the file says otherwise; TOTP's default is 30 s.
      const periodSeconds = kind === 'totp' ? (interval ?? (algorithm === 'SM3' ? 60 : 30)) : 0;

      const spec = {
        kind,
        algorithm,
        digits,
        counter: kind === 'hotp' ? counter : 0,
        periodSeconds,
        driftSteps: kind === 'totp' ? drift : 0,
        challengeLength,
        validFrom,
        validUntil,
        manufacturer: (textAt(device, 'Manufacturer') ?? '').trim().slice(0, 128),
        model: (textAt(device, 'Model') ?? '').trim().slice(0, 128),
      };
      const bad = checkTokenParameters({ ...spec, seedLength: secret.length }, options.now);
      if (bad !== undefined) throw new TokenRefused(bad.code, bad.reason);
      tokens.push({ ...spec, index, serial, seed: secret });
      secret = undefined;
    } catch (err) {
      secret?.fill(0);
      if (err instanceof TokenRefused) problem(err.code, err.message);
      else if (err instanceof DecryptFailed) throw decryptionFailed();
      else throw err;
    }
  });
  return { tokens, problems, encryption };
}
