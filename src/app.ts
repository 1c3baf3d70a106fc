import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import helmet from 'helmet';
import cookieParser from 'cookie-parser';
import type { Gateway } from './gateway.ts';
import { ApiRegistry, buildOpenApi } from './http/api-registry.ts';
import { errorHandler, notFound } from './http/error-handler.ts';
import { refuseControlCharacters, refuseMalformedUtf8 } from './http/input-guard.ts';
import { healthRouter } from './http/health-router.ts';
import { locals, requestId } from './http/request-context.ts';
import { loadSession, sessionCookieName } from './http/session.ts';
import { authRouter } from './http/auth-router.ts';
import { adminRouter } from './http/admin-router.ts';
import { setupRouter } from './http/setup-router.ts';
import { clientsRouter } from './http/clients-router.ts';
import { policiesRouter } from './http/policies-router.ts';
import { pagesRouter } from './http/pages-router.ts';
import { rateLimitByAddress } from './http/rate-limit.ts';
import { meFactorsRouter } from './http/me-factors-router.ts';
import { meSessionsRouter } from './http/me-sessions-router.ts';
import { sessionConfirmRouter } from './http/session-confirm-router.ts';
import { securityPagesRouter } from './http/security-pages-router.ts';
import { accountPagesRouter } from './http/account-pages-router.ts';
import { meSmsOtpRouter } from './http/me-sms-otp-router.ts';
import { smsPagesRouter } from './http/sms-pages-router.ts';
import { meTotpRouter } from './http/me-totp-router.ts';
import { meRecoveryCodeRouter } from './http/me-recovery-code-router.ts';
import { totpPagesRouter } from './http/totp-pages-router.ts';
import { recoveryCodesPagesRouter } from './http/recovery-codes-pages-router.ts';
import { wellKnownRouter } from './http/well-known-router.ts';
import { stepUpRouter } from './http/stepup-router.ts';
import { stepUpPagesRouter } from './http/stepup-pages-router.ts';
import { hardwareTokensRouter } from './http/hardware-tokens-router.ts';
import { meHardwareOtpRouter } from './http/me-hardware-otp-router.ts';
import { hardwareOtpPagesRouter } from './http/hardware-otp-pages-router.ts';
import { meWebAuthnRouter } from './http/me-webauthn-router.ts';
import { webauthnLoginRouter } from './http/webauthn-login-router.ts';
import { stepUpWebAuthnRouter } from './http/stepup-webauthn-router.ts';
import { passwordResetRouter } from './http/password-reset-router.ts';
import { consoleRouter } from './http/console-router.ts';
import { strictJsonBody } from './verifier/strict-json.ts';
import { adminApiSecondFactorGate, secondFactorRouter } from './http/second-factor-router.ts';

export const VERSION = '0.1.0';

/**
 * `Cache-Control: no-store` unless a route says otherwise: answers carry sessions, tickets,
 * tokens, secrets shown once and personal data, and an error for one of those says something
 * too. Only public documents (static assets, JWKS, discovery, the OpenAPI document) set their
 * own caching.
 */
function noStoreByDefault(req: Request, res: Response, next: NextFunction): void {
  if (!req.path.startsWith('/static/') && req.path !== '/openapi.json') res.setHeader('Cache-Control', 'no-store');
  next();
}

function accessLog(gw: Gateway) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      // The route template, not the raw path, keeps label cardinality bounded.
      const route = (req.route as { path?: string } | undefined)?.path;
      const routeLabel = route === undefined ? 'unmatched' : `${req.baseUrl}${route}`;
      gw.metrics.httpDuration.observe({ method: req.method, route: routeLabel, status: `${Math.floor(res.statusCode / 100)}xx` }, seconds);
      gw.logger.info(
        { requestId: locals(res).requestId, method: req.method, route: routeLabel, status: res.statusCode, ms: Math.round(seconds * 1000) },
        'request',
      );
    });
    next();
  };
}

/** The express app. The middleware list reads as the request pipeline. */
export function createApp(gw: Gateway): { app: Express; api: ApiRegistry } {
  // loadConfig refuses it in production (config/load-config.ts); a Config made another way must not slip past.
  if (gw.config.http.echoRoute && gw.config.mode === 'production') throw new TypeError('http.echoRoute is refused in production mode');
  const app = express();
  const api = new ApiRegistry();
  const limit = gw.config.http.bodyLimitBytes;

  app.disable('x-powered-by');
  // Responses are no-store (noStoreByDefault): an ETag, a hash of every body, buys nothing.
  app.set('etag', false);
  app.set('trust proxy', gw.config.http.trustProxyHops);
  app.set('query parser', 'simple');

  app.use(requestId);
  app.use(accessLog(gw));
  app.use(
    helmet({
      contentSecurityPolicy: {
        directives: {
          defaultSrc: ["'self'"],
          scriptSrc: ["'self'"],
          styleSrc: ["'self'"],
          imgSrc: ["'self'", 'data:'],
          formAction: ["'self'"],
          frameAncestors: ["'none'"],
          objectSrc: ["'none'"],
          baseUri: ["'none'"],
          upgradeInsecureRequests: gw.config.mode === 'production' ? [] : null,
        },
      },
      strictTransportSecurity: gw.config.mode === 'production',
    }),
  );
  app.use(noStoreByDefault);
  app.use(rateLimitByAddress(gw));
  // express.json, but a member name given twice is refused (400 duplicate_member) rather than the last one winning.
  app.use(strictJsonBody({ limit, verify: refuseMalformedUtf8 }));
  app.use(express.urlencoded({ limit, extended: false, parameterLimit: 100, verify: refuseMalformedUtf8 }));
  app.use(cookieParser());
  // Before the session lookup and every router: nothing is read, charged or written for such input.
  app.use(refuseControlCharacters(api.routes));
  app.use(loadSession(gw));

  if (gw.config.http.echoRoute) {
    // The benchmark's "same server" baseline (config http.echoRoute, off by default).
    app.post('/v1/echo', (req, res) => {
      res.json(req.body ?? {});
    });
  }
  // The step-up API first: it carries the hot routes (verify, token), and every router ahead
  // of the one that answers is entered and has its routes matched in vain (~5 µs a router per
  // request on the bench machine, bench/notes/http-overhead.md). No path here overlaps another
  // router's, so the order changes nothing else.
  app.use(stepUpRouter(gw, api));
  app.use(healthRouter(gw, api));
  app.use(wellKnownRouter(gw, api));
  app.use(authRouter(gw, api));
  app.use(secondFactorRouter(gw, api));
  // Staff sessions reach the admin API only with a second factor (config admin.apiRequiresSecondFactor).
  app.use('/v1/admin', adminApiSecondFactorGate(gw));
  app.use(adminRouter(gw, api));
  app.use(setupRouter(gw, api));
  app.use(passwordResetRouter(gw, api));
  app.use(clientsRouter(gw, api));
  app.use(policiesRouter(gw, api));
  app.use(meFactorsRouter(gw, api));
  app.use(meSessionsRouter(gw, api));
  app.use(hardwareTokensRouter(gw, api));
  app.use(meHardwareOtpRouter(gw, api));
  app.use(meSmsOtpRouter(gw, api));
  app.use(meTotpRouter(gw, api));
  app.use(meRecoveryCodeRouter(gw, api));
  app.use(meWebAuthnRouter(gw, api));
  app.use(webauthnLoginRouter(gw, api));
  app.use(stepUpWebAuthnRouter(gw, api));
  app.use(pagesRouter(gw));
  app.use(stepUpPagesRouter(gw));
  app.use(sessionConfirmRouter(gw, api));
  app.use(securityPagesRouter(gw));
  app.use(accountPagesRouter(gw));
  app.use(hardwareOtpPagesRouter(gw));
  app.use(smsPagesRouter(gw));
  app.use(totpPagesRouter(gw));
  app.use(recoveryCodesPagesRouter(gw));
  app.use(consoleRouter(gw));

  const openapi = buildOpenApi(api, { version: VERSION, serverUrl: gw.config.http.publicUrl, sessionCookie: sessionCookieName(gw.config) });
  app.get('/openapi.json', (_req, res) => {
    res.json(openapi);
  });

  app.use(notFound);
  app.use(errorHandler(gw.logger));
  return { app, api };
}
