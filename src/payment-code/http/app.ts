import cookieParser from 'cookie-parser';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import helmet from 'helmet';
import { PaymentCodeError } from '../errors.ts';
import { PAYMENT_CODE_VERSION, type PaymentCodeService } from '../service.ts';
import { ApiRoutes, buildOpenApi } from './api.ts';
import { apiRouter } from './api-router.ts';
import { demoRouter } from './demo-router.ts';
import { errorHandler, requestId, requestIdOf } from './problem.ts';
import { strictJsonBody } from '../../verifier/index.ts';

function accessLog(svc: PaymentCodeService) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const path = (req.route as { path?: string } | undefined)?.path;
      const route = path === undefined ? 'unmatched' : `${req.baseUrl}${path}`;
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      svc.metrics.httpDuration.observe({ method: req.method, route, status: `${Math.floor(res.statusCode / 100)}xx` }, seconds);
      svc.logger.info({ requestId: requestIdOf(res), method: req.method, route, status: res.statusCode, ms: Math.round(seconds * 1000) }, 'request');
    });
    next();
  };
}

/** The service's express app. The middleware list reads as the request pipeline. */
export function createPaymentCodeApp(svc: PaymentCodeService): Express {
  const app = express();
  const api = new ApiRoutes();
  const limit = svc.config.http.bodyLimitBytes;
  const demo = svc.config.mode === 'development' && svc.config.demo.enabled;

  app.disable('x-powered-by');
  app.set('trust proxy', svc.config.http.trustProxyHops);
  app.set('query parser', 'simple');
  app.use(requestId);
  app.use(accessLog(svc));
  app.use(
    helmet({
      contentSecurityPolicy: {
        directives: {
          defaultSrc: ["'self'"],
          scriptSrc: ["'self'"],
          styleSrc: ["'self'"],
          imgSrc: ["'self'", 'data:'],
          // The demo's forms end in a redirect to the gateway's step-up page.
          formAction: ["'self'", svc.config.gateway.url, svc.config.gateway.issuer],
          frameAncestors: ["'none'"],
          objectSrc: ["'none'"],
          baseUri: ["'none'"],
          upgradeInsecureRequests: svc.config.mode === 'production' ? [] : null,
        },
      },
      strictTransportSecurity: svc.config.mode === 'production',
    }),
  );
  // express.json, but a member name given twice is refused (400 duplicate_member): the gateway reads bodies the same way.
  app.use(strictJsonBody({ limit }));
  app.use(express.urlencoded({ limit, extended: false, parameterLimit: 20 }));
  app.use(cookieParser());

  app.use(apiRouter(svc, api));
  // The demo wallet exists in development only; in production its paths are plain 404s.
  if (demo) app.use(demoRouter(svc));

  const openapi = buildOpenApi(api, svc.config.http.publicUrl, PAYMENT_CODE_VERSION);
  app.get('/openapi.json', (_req, res) => {
    res.json(openapi);
  });
  // Prometheus scrape endpoint. Like the gateway's, it carries no secrets and no per-user
  // labels; expose it on the internal network only (docs/payment-codes.md, "Operations").
  app.get('/metrics', async (_req, res) => {
    res.type(svc.metrics.registry.contentType).send(await svc.metrics.registry.metrics());
  });
  app.use((_req: Request, _res: Response, next: NextFunction) => {
    next(new PaymentCodeError('not_found'));
  });
  app.use(errorHandler(svc.logger));
  return app;
}
