import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { firstRunSetupLink } from '../flows/admin-setup.ts';
import { readDemoFile, seedDemo } from '../flows/demo-seed.ts';
import { loadPaymentCodeConfig, PaymentCodeConfigError } from '../payment-code/config.ts';
import { type Command, ConfigError, stringOption } from './command.ts';
import { startServer } from './serve-command.ts';

/**
 * `npm start`: the development demo. Runs the gateway in this process and the payment-code
 * service as a second process (exactly as in production: its own database, HTTP only),
 * after seeding the demo user, the service's client registration and the demo policies.
 * `stepgate serve` stays the gateway alone.
 */
const BIN = fileURLToPath(new URL('../../bin/stepgate.js', import.meta.url));

async function waitForHealth(url: string, child: ChildProcess, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) return false;
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return true;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}

export const demoCommand: Command = {
  name: ['demo'],
  summary: 'Development demo (what `npm start` runs): the gateway plus the payment-code service with a demo wallet.',
  usage: [
    'stepgate demo [--config FILE] [--demo-file FILE]',
    '',
    '  Development mode only. Seeds config/demo.yaml (demo user, client registration, demo',
    '  policies) into the gateway, starts the gateway here and `stepgate payment-code-service`',
    '  as a child process, and prints where the demo wallet is. Ctrl-C stops both.',
    '  In production run `stepgate serve` and `stepgate payment-code-service` separately.',
  ].join('\n'),
  options: { 'demo-file': { type: 'string' } },
  async run(args) {
    const config = args.config();
    if (config.mode !== 'development') {
      args.err('stepgate demo: the demo runs in development mode only. In production run `stepgate serve` (the gateway) and `stepgate payment-code-service` separately.');
      return 2;
    }
    let pcConfig: ReturnType<typeof loadPaymentCodeConfig>;
    try {
      pcConfig = loadPaymentCodeConfig({ file: stringOption(args, 'config') });
    } catch (err) {
      if (err instanceof PaymentCodeConfigError) throw new ConfigError(err.key, err.message.replace(/^config: [^:]+: /, ''));
      throw err;
    }
    if (pcConfig.http.port === 0) throw new ConfigError('paymentCode.http.port', 'the demo needs a fixed port for the payment-code service (it is the redirect URI registered at the gateway)');
    const demo = readDemoFile(stringOption(args, 'demo-file'));

    const running = await startServer(config);
    const { gateway: gw } = running;
    const gatewayPort = Number(new URL(running.url).port);
    gw.logger.info({ port: gatewayPort, database: gw.store.location, mode: config.mode }, 'stepgate listening');
    let seeded: Awaited<ReturnType<typeof seedDemo>>;
    try {
      seeded = await seedDemo(gw, demo, pcConfig.http.publicUrl);
    } catch (err) {
      await running.stop();
      throw err;
    }

    const env: NodeJS.ProcessEnv = {
      ...process.env,
      STEPGATE_PAYMENT_CODE_GATEWAY_URL: `http://127.0.0.1:${gatewayPort}`,
      STEPGATE_PAYMENT_CODE_GATEWAY_ISSUER: config.http.publicUrl,
      STEPGATE_PAYMENT_CODE_GATEWAY_JWKS_URI: `http://127.0.0.1:${gatewayPort}/.well-known/jwks.json`,
      STEPGATE_PAYMENT_CODE_CLIENT_ID: seeded.client.clientId,
      STEPGATE_PAYMENT_CODE_CLIENT_AUTH: 'client_secret_basic',
      STEPGATE_PAYMENT_CODE_CLIENT_SECRET: seeded.client.clientSecret,
      STEPGATE_PAYMENT_CODE_ISSUE_ACR: demo.paymentCode.issueAcr,
      STEPGATE_PAYMENT_CODE_OFFLINE_SEED_ACR: demo.paymentCode.offlineSeedAcr,
      STEPGATE_PAYMENT_CODE_DEMO_USERS: seeded.users.map((u) => `${u.username}=${u.id}`).join(','),
    };
    const file = stringOption(args, 'config');
    // The secret travels in the child's environment, never on its command line (ps shows that).
    const child = spawn(process.execPath, [BIN, 'payment-code-service', ...(file === undefined ? [] : ['--config', file])], { env, stdio: 'inherit' });
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    const pcLocal = `http://127.0.0.1:${pcConfig.http.port}`;
    const healthy = await waitForHealth(pcLocal, child, 30_000);
    if (!healthy) {
      args.err('stepgate demo: the payment-code service did not start (see its log above).');
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      await running.stop();
      return 1;
    }

    const link = await firstRunSetupLink(gw);
    args.err(
      [
        '',
        '  ┌─ Stepgate demo — development only ──────────────────────────────────────',
        `  │ demo wallet:   ${pcConfig.http.publicUrl}/demo`,
        `  │ gateway:       ${config.http.publicUrl}`,
        ...seeded.credentials.map((u) => `  │ demo user:     ${u}`),
        `  │ ${seeded.policies}`,
        ...(link === undefined ? [] : [`  │ first administrator: open this one-time link (valid ${Math.round(config.admin.setupLinkSeconds / 60)} min):`, `  │   ${link}`]),
        '  └─ Ctrl-C stops both. `stepgate serve` runs the gateway alone.',
        '',
      ].join('\n'),
    );

    const code = await new Promise<number>((resolve) => {
      let stopping = false;
      const shutdown = (signal: NodeJS.Signals) => {
        if (stopping) return;
        stopping = true;
        gw.logger.info({ signal }, 'shutting down the demo');
        if (child.exitCode === null) child.kill('SIGTERM');
        void exited.then(() => running.stop()).then(() => resolve(0));
      };
      process.once('SIGTERM', () => shutdown('SIGTERM'));
      process.once('SIGINT', () => shutdown('SIGINT'));
      void exited.then(([status]) => {
        if (stopping) return;
        stopping = true;
        args.err(`stepgate demo: the payment-code service exited (${status ?? 'signal'}); stopping the gateway.`);
        void running.stop().then(() => resolve(1));
      });
    });
    return code;
  },
};
