import { createServer, type Server } from 'node:http';
import { createApp } from '../app.ts';
import { createGateway, type Gateway } from '../gateway.ts';
import { firstRunSetupLink } from '../flows/admin-setup.ts';
import { startMaintenance } from '../flows/maintenance.ts';
import { startNotificationDelivery } from '../notifications/delivery.ts';
import type { Config } from '../config/schema.ts';
import type { Command } from './command.ts';
import { describeError, StartupError } from '../errors/startup-error.ts';

export interface RunningServer {
  gateway: Gateway;
  server: Server;
  url: string;
  stop(): Promise<void>;
}

/** Starts the gateway's HTTP server with the configured timeouts. Used by `serve` and by tests. */
export async function startServer(config: Config, gateway?: Gateway): Promise<RunningServer> {
  const gw = gateway ?? (await createGateway(config));
  const { app } = createApp(gw);
  // Node checks the header and request deadlines only every connectionsCheckingInterval
  // (30 s by default), so a slowloris client could hold a connection for 30 s whatever the
  // configured timeouts; checking every second makes them mean what they say.
  const server = createServer({ connectionsCheckingInterval: 1000 }, app);
  server.requestTimeout = config.http.requestTimeoutSeconds * 1000;
  server.headersTimeout = config.http.headersTimeoutSeconds * 1000;
  server.keepAliveTimeout = config.http.keepAliveTimeoutSeconds * 1000;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.http.port, config.http.host, () => resolve());
    });
  } catch (err) {
    if (gateway === undefined) await gw.close();
    throw new StartupError(`cannot listen on ${config.http.host}:${config.http.port}: ${describeError(err)} (is another process listening there? set http.port / STEPGATE_HTTP_PORT)`, { cause: err });
  }
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.http.port;
  const stopMaintenance = startMaintenance(gw, config.maintenance.intervalSeconds);
  const stopNotifications = startNotificationDelivery(gw);
  let stopping: Promise<void> | undefined;
  return {
    gateway: gw,
    server,
    url: `http://127.0.0.1:${port}`,
    stop() {
      stopping ??= (async () => {
        stopMaintenance();
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        const grace = setTimeout(() => server.closeAllConnections(), config.http.shutdownGraceSeconds * 1000);
        await closed;
        clearTimeout(grace);
        // A delivery under way finishes first (at most the webhook timeout), then the store closes.
        await stopNotifications();
        await gw.close();
      })();
      return stopping;
    },
  };
}

export const serveCommand: Command = {
  name: ['serve'],
  summary: 'Run the gateway (applies migrations first).',
  usage: 'stepgate serve [--config FILE]',
  options: {},
  async run(args) {
    const config = args.config();
    const running = await startServer(config);
    const { logger } = running.gateway;
    // Signal handlers first: a SIGTERM arriving while the set-up link is issued must still be
    // a graceful shutdown (exit 0), not Node's default kill.
    let signalled = false;
    const stopped = new Promise<void>((resolve) => {
      const shutdown = (signal: string) => {
        signalled = true;
        logger.info({ signal }, 'shutting down');
        void running.stop().then(resolve);
      };
      process.once('SIGTERM', () => shutdown('SIGTERM'));
      process.once('SIGINT', () => shutdown('SIGINT'));
    });
    // The bound port (with http.port 0 the system picks one; scripts and tests read it here).
    logger.info({ port: Number(new URL(running.url).port), database: running.gateway.store.location, mode: config.mode }, 'stepgate listening');
    try {
      const link = await firstRunSetupLink(running.gateway);
      if (link !== undefined && !signalled) {
        // Printed to the operator's terminal, not to the log stream: it is a one-time secret.
        args.err(`\n  No administrator exists yet. Open this one-time set-up link (valid ${Math.round(config.admin.setupLinkSeconds / 60)} min):\n\n    ${link}\n`);
      }
    } catch (err) {
      // The store closes under a shutdown that began meanwhile; anything else is real.
      if (!signalled) throw err;
    }
    await stopped;
    return 0;
  },
};
