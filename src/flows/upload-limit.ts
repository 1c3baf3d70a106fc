import type { Gateway } from '../gateway.ts';
import { AppError } from '../errors/app-error.ts';

/** The largest token file accepted through HTTP (admin API, console): see `hardwareTokens.import.maxUploadBytes`. */
export function tokenUploadByteLimit(gw: Gateway): number {
  const { maxBytes, maxUploadBytes } = gw.config.hardwareTokens.import;
  return Math.min(maxBytes, maxUploadBytes);
}

/**
 * Refuses, before any byte of the body is read, an upload whose declared length is over the
 * limit, naming the way to import a larger file (a body without a length is cut by the body
 * parser's own limit: payload_too_large).
 */
export function declaredLengthOver(gw: Gateway, contentLength: string | undefined, slack = 0): AppError | undefined {
  if (contentLength === undefined || !/^\d+$/.test(contentLength)) return undefined;
  const bytes = Number(contentLength);
  const limit = tokenUploadByteLimit(gw);
  if (bytes <= limit + slack) return undefined;
  return new AppError('token_file_too_large', {
    detail: `The upload has ${bytes} bytes, more than the ${limit} a token file may have through the API or the console (hardwareTokens.import.maxUploadBytes); import larger files on the gateway host with \`stepgate tokens import FILE\` (up to ${gw.config.hardwareTokens.import.maxBytes} bytes).`,
  });
}
