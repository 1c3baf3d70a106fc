import type { NextFunction, Request, Response } from 'express';
import { AppError, isAppError } from '../errors/app-error.ts';
import { internalProblem, PROBLEM_CONTENT_TYPE, toProblem } from '../errors/problem.ts';
import type { Logger } from '../logger.ts';
import { isDatabaseUnavailable } from '../store/database.ts';
import { DUPLICATE_MEMBER, NOT_UTF8 } from '../verifier/strict-json.ts';
import { MALFORMED_UTF8 } from './input-guard.ts';
import { locals } from './request-context.ts';

/** A JSON member name given twice in one object (verifier/strict-json.ts): `pointer` is the second one. */
export function duplicateMember(pointer: string): AppError {
  return new AppError('duplicate_member', {
    detail: 'A member name appears more than once in one JSON object; send each member once.',
    invalidParams: [{ pointer, reason: 'duplicate member name' }],
  });
}

/** body-parser / express errors that are the client's fault. */
function fromFrameworkError(err: unknown): AppError | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { type?: string; status?: number; statusCode?: number; form?: boolean; pointer?: string; reason?: unknown };
  switch (e.type) {
    case 'entity.parse.failed':
      return new AppError('invalid_json', { invalidParams: [{ pointer: '', reason: 'body is not valid JSON' }] });
    case DUPLICATE_MEMBER:
      return duplicateMember(e.pointer ?? '');
    case MALFORMED_UTF8:
      return new AppError(e.form === true ? 'invalid_request' : 'invalid_json', { detail: 'The request body is not valid UTF-8.', invalidParams: [{ pointer: '', reason: 'body is not valid UTF-8' }] });
    case 'entity.too.large':
      return new AppError('payload_too_large');
    case NOT_UTF8:
      return new AppError('unsupported_media_type', {
        detail: 'JSON and form bodies must be UTF-8 (RFC 8259 §8.1): no other charset, no byte order mark.',
        invalidParams: [{ pointer: '', reason: typeof e.reason === 'string' ? e.reason : 'the body must be UTF-8' }],
      });
    case 'encoding.unsupported':
      return new AppError('unsupported_media_type');
    case 'request.aborted':
    case 'request.size.invalid':
    case 'stream.encoding.set':
    case 'parameters.too.many':
      return new AppError('invalid_request');
  }
  const status = e.status ?? e.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) return new AppError('invalid_request');
  return undefined;
}

/** The database is down or restarting: fail closed with 503 and Retry-After (the next request may work). */
function databaseUnavailable(err: unknown): AppError | undefined {
  return isDatabaseUnavailable(err) ? new AppError('service_unavailable', { retryAfterSeconds: 5, detail: 'The service cannot reach its database; try again shortly.' }) : undefined;
}

export function sendProblem(res: Response, err: AppError): void {
  if (err.retryAfterSeconds !== undefined) res.setHeader('Retry-After', String(Math.ceil(err.retryAfterSeconds)));
  if (err.status === 401 && !res.hasHeader('WWW-Authenticate')) res.setHeader('WWW-Authenticate', 'Bearer realm="stepgate"');
  res.status(err.status).type(PROBLEM_CONTENT_TYPE).send(JSON.stringify(toProblem(err, locals(res).requestId)));
}

/** The one place errors become the wire format. Unexpected errors are a generic 500, logged with the request id. */
export function errorHandler(logger: Logger) {
  return (err: unknown, req: Request, res: Response, _next: NextFunction): void => {
    const appError = isAppError(err) ? err : (fromFrameworkError(err) ?? databaseUnavailable(err));
    if (res.headersSent) {
      logger.error({ err, requestId: locals(res).requestId }, 'error after headers were sent');
      res.destroy();
      return;
    }
    if (appError !== undefined) {
      if (appError.status >= 500) logger.error({ err, requestId: locals(res).requestId }, appError.code);
      sendProblem(res, appError);
      return;
    }
    logger.error({ err, requestId: locals(res).requestId, method: req.method, path: req.path }, 'unhandled error');
    res.status(500).type(PROBLEM_CONTENT_TYPE).send(JSON.stringify(internalProblem(locals(res).requestId)));
  };
}

export function notFound(_req: Request, _res: Response, next: NextFunction): void {
  next(new AppError('not_found'));
}
