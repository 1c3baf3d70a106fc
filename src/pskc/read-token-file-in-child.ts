import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { AppError, type ErrorCode, type InvalidParam } from '../errors/app-error.ts';
import type { ReadTokenFileOptions, TokenFile } from './read-token-file.ts';
import type { TokenSpec } from './token-spec.ts';

/** What the child is sent (structured-cloned over its IPC channel). */
export interface ChildRequest {
  data: Uint8Array;
  options: Omit<ReadTokenFileOptions, 'password' | 'psk'>;
  password: string | undefined;
  psk: Uint8Array | undefined;
}

export interface PackedTokenFile extends Omit<TokenFile, 'tokens'> {
  tokens: (Omit<TokenSpec, 'seed'> & { seedOffset: number; seedLength: number })[];
  /** Every seed, back to back. */
  seeds: Uint8Array;
}

export type ChildReply =
  | { ok: true; file: PackedTokenFile }
  | { ok: false; appError: { code: ErrorCode; detail: string | undefined; invalidParams: InvalidParam[] | undefined } }
  | { ok: false; unexpected: string };

/**
 * The most heap the reader may use for a file of this size: the decoded text, the XML tree
 * (measured: a 38 MB python-pskc file of 50,000 tokens reads within 400 MB) and the token
 * specs. Past it the reader alone stops (the caller hears token_file_too_large), never the
 * calling process.
 */
export function readerHeapLimitMb(bytes: number): number {
  return Math.min(16_384, 256 + Math.ceil((bytes / 2 ** 20) * 16));
}

const CHILD = fileURLToPath(new URL('./read-token-file-child.ts', import.meta.url));

/**
 * readTokenFile in a child process with a heap of its own: the same result and the same
 * AppErrors, but a large file's text and XML tree never enter the calling process's heap
 * (the gateway runs with a small heap limit, config runtime.heap, and a worker thread would
 * share it: V8's heap flags are per process), and all of that memory goes back to the
 * system when the child exits. TokenSpec.seed are views of one buffer the caller must zero.
 */
export async function readTokenFileInChild(data: Buffer, options: ReadTokenFileOptions, limits: { maxHeapMb?: number } = {}): Promise<TokenFile> {
  // Checked here too, so an oversized file is refused before a process is started for it.
  if (data.length > options.maxBytes) {
    throw new AppError('token_file_too_large', { detail: `The file has ${data.length} bytes; at most ${options.maxBytes} are accepted.` });
  }
  const { password, psk, ...rest } = options;
  const request: ChildRequest = { data, options: rest, password, psk };
  // Only the flags the reader needs: not the parent's heap limits, profiler or inspector.
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', `--max-old-space-size=${limits.maxHeapMb ?? readerHeapLimitMb(data.length)}`, CHILD], {
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    serialization: 'advanced',
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    if (stderr.length < 16_384) stderr += chunk;
  });
  const reply = await new Promise<ChildReply>((resolve, reject) => {
    let answer: ChildReply | undefined;
    child.once('message', (m: ChildReply) => {
      answer = m;
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (answer !== undefined) resolve(answer);
      else if (/heap out of memory|out of memory/i.test(stderr)) {
        reject(new AppError('token_file_too_large', { detail: 'The file needs more memory to read than a single import may use; split it into smaller files.' }));
      } else {
        reject(new Error(`the token file reader stopped without an answer (exit ${code ?? signal}): ${stderr.trim().split('\n').slice(-3).join(' ')}`));
      }
    });
    child.send(request, (err) => {
      if (err) reject(err);
    });
  });
  if (!reply.ok) {
    if ('appError' in reply) {
      const { code, detail, invalidParams } = reply.appError;
      throw new AppError(code, { ...(detail === undefined ? {} : { detail }), ...(invalidParams === undefined ? {} : { invalidParams }) });
    }
    throw new Error(`reading the token file failed: ${reply.unexpected}`);
  }
  const { tokens, seeds, ...file } = reply.file;
  const seedBytes = Buffer.from(seeds.buffer, seeds.byteOffset, seeds.byteLength);
  return {
    ...file,
    tokens: tokens.map(({ seedOffset, seedLength, ...spec }) => ({ ...spec, seed: seedBytes.subarray(seedOffset, seedOffset + seedLength) })),
  };
}
