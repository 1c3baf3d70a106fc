import { randomBytes } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { z } from 'zod';
import { type InvalidParam, isPaymentCodeError, PaymentCodeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { isPaymentCodeDatabaseUnavailable } from '../store/database.ts';
import { DUPLICATE_MEMBER } from '../../verifier/index.ts';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

export function requestIdOf(res: Response): string {
  return (res.locals as { requestId?: string }).requestId ?? '';
}

/** A request id per request (or the caller's, when it is sane), echoed in X-Request-Id. */
export function requestId(req: Request, res: Response, next: NextFunction): void {
  const given = req.get('x-request-id');
  const id = given !== undefined && /^[A-Za-z0-9._-]{8,64}$/.test(given) ? given : randomBytes(12).toString('base64url');
  (res.locals as { requestId?: string }).requestId = id;
  res.setHeader('X-Request-Id', id);
  next();
}

function pointerOf(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '';
  return `/${path.map((p) => String(p).replaceAll('~', '~0').replaceAll('/', '~1')).join('/')}`;
}

export function invalidParamsOf(error: z.ZodError): InvalidParam[] {
  const out: InvalidParam[] = [];
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') for (const key of issue.keys) out.push({ pointer: pointerOf([...issue.path, key]), reason: 'unknown field' });
    else out.push({ pointer: pointerOf(issue.path), reason: issue.message });
  }
  return out;
}

export function parseInput<S extends z.ZodType>(schema: S, input: unknown, where: 'body' | 'query'): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  throw new PaymentCodeError('validation_failed', { detail: `The request ${where} is invalid.`, invalidParams: invalidParamsOf(result.error) });
}

function challengeHeader(err: PaymentCodeError): string | undefined {
  if (err.challenge === undefined) return undefined;
  const description = err.title.replaceAll('"', "'");
  return `Bearer error="insufficient_user_authentication", error_description="${description}", acr_values="${err.challenge.acrValues}", max_age=${err.challenge.maxAgeSeconds}`;
}

export function sendProblem(res: Response, err: PaymentCodeError): void {
  const problem: Record<string, unknown> = {
    type: `https://stepgate.dev/problems/${err.code}`,
    title: err.title,
    status: err.status,
    code: err.code,
  };
  if (err.detail !== undefined && err.detail !== err.title) problem.detail = err.detail;
  if (err.invalidParams !== undefined && err.invalidParams.length > 0) problem.invalid_params = err.invalidParams;
  if (err.field !== undefined) problem.field = err.field;
  if (err.challenge !== undefined) {
    problem.acr_values = err.challenge.acrValues;
    problem.max_age = err.challenge.maxAgeSeconds;
    Object.assign(problem, err.challenge.body ?? {});
  }
  const id = requestIdOf(res);
  if (id !== '') problem.request_id = id;
  const challenge = challengeHeader(err);
  if (challenge !== undefined) res.setHeader('WWW-Authenticate', challenge);
  else if (err.status === 401) res.setHeader('WWW-Authenticate', 'Bearer realm="stepgate-payment-code"');
  if (err.retryAfterSeconds !== undefined) res.setHeader('Retry-After', String(Math.ceil(err.retryAfterSeconds)));
  res.setHeader('Cache-Control', 'no-store');
  res.status(err.status).type(PROBLEM_CONTENT_TYPE).send(JSON.stringify(problem));
}

/** body-parser errors are the client's fault. */
function fromFrameworkError(err: unknown): PaymentCodeError | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { type?: string; status?: number; statusCode?: number; pointer?: string };
  if (e.type === 'entity.parse.failed') return new PaymentCodeError('invalid_json', { invalidParams: [{ pointer: '', reason: 'body is not valid JSON' }] });
  if (e.type === DUPLICATE_MEMBER) return new PaymentCodeError('duplicate_member', { invalidParams: [{ pointer: e.pointer ?? '', reason: 'duplicate member name' }] });
  if (e.type === 'entity.too.large') return new PaymentCodeError('payload_too_large');
  if (e.type === 'encoding.unsupported' || e.type === 'charset.unsupported') return new PaymentCodeError('unsupported_media_type');
  const status = e.status ?? e.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) return new PaymentCodeError('invalid_request');
  return undefined;
}

/** The one place errors become the wire format; anything unexpected is a logged, generic 500. */
export function errorHandler(logger: Logger) {
  return (err: unknown, req: Request, res: Response, _next: NextFunction): void => {
    if (res.headersSent) {
      logger.error({ err, requestId: requestIdOf(res) }, 'error after headers were sent');
      res.destroy();
      return;
    }
    const known = isPaymentCodeError(err)
      ? err
      : (fromFrameworkError(err) ?? (isPaymentCodeDatabaseUnavailable(err) ? new PaymentCodeError('service_unavailable', { retryAfterSeconds: 5 }) : undefined));
    if (known !== undefined) {
      if (known.status >= 500) logger.error({ err, requestId: requestIdOf(res) }, known.code);
      sendProblem(res, known);
      return;
    }
    logger.error({ err, requestId: requestIdOf(res), method: req.method, path: req.path }, 'unhandled error');
    sendProblem(res, new PaymentCodeError('internal_error'));
  };
}
