import type { Gateway } from '../gateway.ts';
import { AppError } from '../errors/app-error.ts';

/** The largest token file accepted through HTTP (admin API, console): see `hardwareTokens.import.maxUploadBytes`. */
export function tokenUploadByteLimit(gw: Gateway): number {
  const { maxBytes, maxUploadBytes } = gw.config.hardwareTokens.import;
  return Math.min(maxBytes, maxUploadBytes);
}

/** The refusal of an upload over the limit, naming the way to import a larger file. */
export function tokenUploadTooLarge(gw: Gateway, bytes: number | undefined): AppError {
  const limit = tokenUploadByteLimit(gw);
  const { maxBytes } = gw.config.hardwareTokens.import;
  return new AppError('token_file_too_large', {
    detail: `${bytes === undefined ? 'The file is' : `The file has ${bytes} bytes;`} over the ${limit} bytes an upload may have (hardwareTokens.import.maxUploadBytes); import larger files on the gateway host with \`stepgate tokens import FILE\` (up to ${maxBytes} bytes).`,
  });
}

/**
 * Refuses, before any byte of the body is read, an upload whose declared length is over the
 * limit (a body without a length is cut by the body parser's own limit: payload_too_large).
 */
export function declaredLengthOver(gw: Gateway, contentLength: string | undefined, slack = 0): AppError | undefined {
  if (contentLength === undefined || !/^\d+$/.test(contentLength)) return undefined;
  const bytes = Number(contentLength);
  return bytes > tokenUploadByteLimit(gw) + slack ? tokenUploadTooLarge(gw, bytes) : undefined;
}
