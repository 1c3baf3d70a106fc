import type { NextFunction, Request, RequestHandler, Response, Router } from 'express';
import { z } from 'zod';
import { PaymentCodeError } from '../errors.ts';
import { parseInput } from './problem.ts';

/**
 * Every JSON route is declared once with the zod schemas that validate it; the same
 * declarations generate this service's /openapi.json (the gateway's API registry, in
 * miniature: this service imports nothing from the gateway).
 */
export type Security = 'walletKey' | 'acquirerKey' | 'none';

export interface RouteSpec<B extends z.ZodType | undefined = z.ZodType | undefined, Q extends z.ZodType | undefined = z.ZodType | undefined> {
  method: 'get' | 'post' | 'delete';
  path: string;
  summary: string;
  tag: string;
  security: Security;
  body?: B;
  query?: Q;
  responses: Record<number, { description: string; schema?: z.ZodType }>;
}

type Out<S> = S extends z.ZodType ? z.output<S> : undefined;

export class ApiRoutes {
  readonly routes: RouteSpec[] = [];

  route<B extends z.ZodType | undefined, Q extends z.ZodType | undefined>(
    router: Router,
    spec: RouteSpec<B, Q>,
    middleware: RequestHandler[],
    handler: (req: Request, res: Response, input: { body: Out<B>; query: Out<Q> }) => Promise<void> | void,
  ): void {
    this.routes.push(spec as RouteSpec);
    const run = async (req: Request, res: Response, _next: NextFunction): Promise<void> => {
      let body: unknown;
      if (spec.body !== undefined) {
        const length = req.headers['content-length'];
        const hasBody = (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined;
        if (hasBody && !req.is('application/json')) throw new PaymentCodeError('unsupported_media_type', { detail: 'Send the body as application/json.' });
        body = parseInput(spec.body, hasBody ? req.body : undefined, 'body');
      }
      const query = spec.query === undefined ? undefined : parseInput(spec.query, { ...req.query }, 'query');
      await handler(req, res, { body, query } as { body: Out<B>; query: Out<Q> });
    };
    router[spec.method](spec.path, ...middleware, run);
  }
}

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): unknown {
  return z.toJSONSchema(schema, { target: 'draft-2020-12', io, unrepresentable: 'any' });
}

const PROBLEM = {
  type: 'object',
  required: ['type', 'title', 'status', 'code'],
  properties: {
    type: { type: 'string' },
    title: { type: 'string' },
    status: { type: 'integer' },
    code: { type: 'string', description: 'Stable machine-readable error code.' },
    detail: { type: 'string' },
    field: { type: 'string', description: 'The context field or token claim at fault (step-up refusals).' },
    invalid_params: { type: 'array', items: { type: 'object', properties: { pointer: { type: 'string' }, reason: { type: 'string' } } } },
    stepup_id: { type: 'string', description: 'step_up_required: the step-up to complete.' },
    user_url: { type: 'string', description: 'step_up_required: the gateway page where the user completes it.' },
    ticket: { type: 'string', description: 'step_up_required: the one-time ticket for the gateway’s native JSON API.' },
    acr_values: { type: 'string' },
    max_age: { type: 'integer' },
    request_id: { type: 'string' },
  },
};

export function buildOpenApi(api: ApiRoutes, serverUrl: string, version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of api.routes) {
    const p = r.path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
    const op: Record<string, unknown> = { summary: r.summary, tags: [r.tag], operationId: `${r.method}${p.replace(/[{}]/g, '').replace(/[^A-Za-z0-9]+(.)/g, (_m, c: string) => c.toUpperCase())}` };
    const params: Record<string, unknown>[] = [...r.path.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    if (r.query !== undefined) {
      const qs = jsonSchema(r.query, 'input') as { properties?: Record<string, unknown>; required?: string[] };
      for (const [name, schema] of Object.entries(qs.properties ?? {})) params.push({ name, in: 'query', required: (qs.required ?? []).includes(name), schema });
    }
    if (params.length > 0) op.parameters = params;
    if (r.body !== undefined) op.requestBody = { required: true, content: { 'application/json': { schema: jsonSchema(r.body, 'input') } } };
    const responses: Record<string, unknown> = {};
    for (const [status, resp] of Object.entries(r.responses)) {
      const content =
        Number(status) >= 400
          ? { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } }
          : resp.schema === undefined
            ? undefined
            : { 'application/json': { schema: jsonSchema(resp.schema, 'output') } };
      responses[status] = content === undefined ? { description: resp.description } : { description: resp.description, content };
    }
    op.responses = responses;
    if (r.security !== 'none') op.security = [{ [r.security]: [] }];
    paths[p] ??= {};
    (paths[p] as Record<string, unknown>)[r.method] = op;
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Stepgate payment-code service', version, description: 'Reference payment-code service: step-up-gated online and offline payment codes, barcode and QR.' },
    servers: [{ url: serverUrl }],
    paths,
    components: {
      schemas: { Problem: PROBLEM },
      securitySchemes: {
        walletKey: { type: 'http', scheme: 'bearer', description: 'API key of a wallet back end (role wallet).' },
        acquirerKey: { type: 'http', scheme: 'bearer', description: 'API key of an acquirer / POS system (role acquirer).' },
      },
    },
  };
}
