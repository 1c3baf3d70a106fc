import { AppError } from '../errors/app-error.ts';
import { readCsv } from './read-csv.ts';
import { type PskcEncryption, readPskc } from './read-pskc.ts';
import type { TokenProblem, TokenSpec } from './token-spec.ts';

export type TokenFileFormat = 'pskc' | 'csv';

export interface ReadTokenFileOptions {
  /** Undefined: PSKC when the file starts with `<`, else CSV. */
  format?: TokenFileFormat | undefined;
  password?: string | undefined;
  psk?: Buffer | undefined;
  now: Date;
  maxBytes: number;
  maxTokens: number;
  maxPbkdf2Iterations: number;
}

export interface TokenFile {
  format: TokenFileFormat;
  encryption: PskcEncryption;
  tokens: TokenSpec[];
  problems: TokenProblem[];
}

/** Size limit, strict UTF-8, format detection; then the PSKC or CSV reader. */
export function readTokenFile(data: Buffer, options: ReadTokenFileOptions): TokenFile {
  if (data.length > options.maxBytes) {
    throw new AppError('token_file_too_large', { detail: `The file has ${data.length} bytes; at most ${options.maxBytes} are accepted.` });
  }
  if (data.length === 0) throw new AppError('token_file_invalid', { detail: 'The file is empty.', invalidParams: [{ pointer: '', reason: 'empty file' }] });
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(data);
  } catch {
    throw new AppError('token_file_invalid', { detail: 'The file is not UTF-8 text.', invalidParams: [{ pointer: '', reason: 'not UTF-8' }] });
  }
  const format = options.format ?? (/^\uFEFF?\s*</.test(text) ? 'pskc' : 'csv');
  if (format === 'pskc') {
    const r = readPskc(text, options);
    return { format, ...r };
  }
  return { format, encryption: 'none', ...readCsv(text, options) };
}
