import type { z } from 'zod';
import { AppError, type InvalidParam } from '../errors/app-error.ts';

function pointerOf(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '';
  return `/${path.map((p) => String(p).replaceAll('~', '~0').replaceAll('/', '~1')).join('/')}`;
}

/** zod issues → the fields at fault, as JSON pointers (RFC 6901). */
export function invalidParamsOf(error: z.ZodError): InvalidParam[] {
  const out: InvalidParam[] = [];
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out.push({ pointer: pointerOf([...issue.path, key]), reason: 'unknown field' });
    } else {
      out.push({ pointer: pointerOf(issue.path), reason: issue.message });
    }
  }
  return out;
}

/** Parses input with a schema or throws a 400 naming every field at fault. */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, where: 'body' | 'query' | 'params' = 'body'): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  throw new AppError('validation_failed', {
    detail: `The request ${where} is invalid.`,
    invalidParams: invalidParamsOf(result.error),
  });
}
