import type { AppError } from './app-error.ts';

/** RFC 9457 problem details, with our stable `code` and the fields at fault. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  code: string;
  detail?: string;
  instance?: string;
  request_id?: string;
  invalid_params?: { pointer: string; reason: string }[];
}

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

export function toProblem(err: AppError, requestId: string | undefined): Problem {
  const problem: Problem = {
    type: `https://stepgate.dev/problems/${err.code}`,
    title: err.title,
    status: err.status,
    code: err.code,
  };
  if (err.detail !== undefined && err.detail !== err.title) problem.detail = err.detail;
  if (err.invalidParams !== undefined && err.invalidParams.length > 0) problem.invalid_params = err.invalidParams;
  if (requestId !== undefined) problem.request_id = requestId;
  return problem;
}

export function internalProblem(requestId: string | undefined): Problem {
  const problem: Problem = {
    type: 'https://stepgate.dev/problems/internal_error',
    title: 'Internal server error',
    status: 500,
    code: 'internal_error',
  };
  if (requestId !== undefined) problem.request_id = requestId;
  return problem;
}
