import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { groupCode, newDeviceSlot, newOnlineCode, parseCode } from '../../src/payment-code/code-format.ts';
import { amountAtMost, amountUnits } from '../../src/payment-code/decimal.ts';
import { base32Decode, base32Encode, formatDeviceSeed, matchOfflineOtp, offlineCode, otpAt, parseDeviceSeed, seedKey, timeStep } from '../../src/payment-code/offline-otp.ts';
import { PaymentCodeSealer, SealError } from '../../src/payment-code/sealer.ts';
import { parseCommandArgs, UsageError } from '../../src/cli/command.ts';
import { paymentCodeGenerateCommand } from '../../src/cli/payment-code-command.ts';
import { needTool } from '../helpers/env.ts';

const execFileAsync = promisify(execFile);
const BIN = fileURLToPath(new URL('../../bin/stepgate.js', import.meta.url));

describe('payment code layout', () => {
  it('online codes: 18 digits, prefix, kind 1, random; offline codes: kind 2, slot, OTP; nothing else parses', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const code = newOnlineCode('18');
      assert.match(code, /^181\d{15}$/);
      seen.add(code);
      assert.deepEqual(parseCode(code, '18'), { kind: 'online', digits: code });
    }
    assert.equal(seen.size, 2000);
    // Every digit position takes every value (no bias towards a fixed digit).
    for (let pos = 3; pos < 18; pos++) assert.equal(new Set([...seen].map((c) => c[pos])).size, 10, `position ${pos}`);
    assert.match(newDeviceSlot(), /^\d{7}$/);
    assert.deepEqual(parseCode('182123456787654321', '18'), { kind: 'offline', digits: '182123456787654321', slot: '1234567', otp: '87654321' });
    assert.deepEqual(parseCode('18 2123 4567 8765 4321', '18'), parseCode('182123456787654321', '18'));
    for (const bad of ['18312345678765432', '183123456787654321', '251234567890123456', '18123456789012345a', '1812345678901234567', '']) {
      assert.equal(parseCode(bad, '18'), undefined, bad);
    }
    assert.equal(groupCode('181234567890123456'), '18 1234 5678 9012 3456');
  });

  it('amounts compare exactly, never through floats', () => {
    assert.equal(amountUnits('0.1'), 100_000n);
    assert.ok(amountAtMost('120.00', '120'));
    assert.ok(amountAtMost('0.30', '0.3'));
    assert.ok(!amountAtMost('120.000001', '120'));
    assert.ok(amountAtMost('999999999999999.999999', '999999999999999.999999'));
    for (const bad of ['1e3', '-1', '+1', '1,000', ' 1', '1.0000001', '']) assert.equal(amountUnits(bad), null, bad);
  });
});

describe('offline codes: RFC 6238 TOTP (HMAC-SHA-256, 8 digits) over the device seed', () => {
  // RFC 6238 Appendix B, SHA-256 seed, 8 digits, 30 s steps.
  const RFC_SEED = Buffer.from('3132333435363738393031323334353637383930313233343536373839303132', 'hex');
  const RFC_VECTORS: [number, string][] = [
    [59, '46119246'],
    [1111111109, '68084774'],
    [1111111111, '67062674'],
    [1234567890, '91819424'],
    [2000000000, '90698825'],
    [20000000000, '77737706'],
  ];

  it('matches the RFC 6238 test vectors', () => {
    const key = seedKey(RFC_SEED);
    for (const [t, otp] of RFC_VECTORS) assert.equal(otpAt(key, timeStep(new Date(t * 1000), 30)), otp, String(t));
  });

  it('matches oathtool for random seeds and times', async (t) => {
    if (needTool(t, 'oathtool', 'oathtool')) return;
    for (let i = 0; i < 5; i++) {
      const seed = { prefix: '18', slot: '0012345', periodSeconds: 30, seed: randomBytes(32) };
      const at = new Date(Date.UTC(2026, 0, 1) + i * 12_345_000);
      const { stdout } = await execFileAsync('oathtool', ['--totp=sha256', '--digits=8', '--time-step-size=30s', `--now=@${Math.floor(at.getTime() / 1000)}`, seed.seed.toString('hex')]);
      assert.equal(offlineCode(seed, at), `1820012345${stdout.trim()}`);
    }
  });

  it('accepts ±1 period and nothing further, in constant time over all three candidates', () => {
    const key = seedKey(RFC_SEED);
    const at = new Date(1_234_567_890_000);
    const step = timeStep(at, 30);
    assert.equal(matchOfflineOtp(key, otpAt(key, step), at, 30), step);
    assert.equal(matchOfflineOtp(key, otpAt(key, step - 1), at, 30), step - 1);
    assert.equal(matchOfflineOtp(key, otpAt(key, step + 1), at, 30), step + 1);
    assert.equal(matchOfflineOtp(key, otpAt(key, step - 2), at, 30), undefined);
    assert.equal(matchOfflineOtp(key, otpAt(key, step + 2), at, 30), undefined);
    assert.equal(matchOfflineOtp(key, '1234567', at, 30), undefined);
    assert.equal(matchOfflineOtp(key, 'abcdefgh', at, 30), undefined);
  });

  it('the device seed string round-trips and rejects anything else', () => {
    const seed = { prefix: '18', slot: '7654321', periodSeconds: 30, seed: randomBytes(32) };
    const text = formatDeviceSeed(seed);
    assert.match(text, /^pcs1:18:7654321:30:[A-Z2-7]{52}$/);
    assert.deepEqual(parseDeviceSeed(text), seed);
    for (const bad of ['pcs2:18:7654321:30:AAAA', 'pcs1:08:7654321:30:' + base32Encode(randomBytes(32)), 'pcs1:18:765432:30:' + base32Encode(randomBytes(32)), 'pcs1:18:7654321:5:' + base32Encode(randomBytes(32)), 'pcs1:18:7654321:30:' + base32Encode(randomBytes(16)), 'pcs1:18:7654321:30:ABC1']) {
      assert.equal(parseDeviceSeed(bad), undefined, bad);
    }
    const bytes = randomBytes(33);
    assert.deepEqual(base32Decode(base32Encode(bytes)), bytes);
    assert.equal(base32Encode(Buffer.from('foobar')), 'MZXW6YTBOI');
  });

  it('stepgate payment-code generate is the reference generator', async () => {
    const seed = { prefix: '18', slot: '0000042', periodSeconds: 30, seed: RFC_SEED };
    // One real process for the binary's wiring…
    const real = spawnSync(process.execPath, [BIN, 'payment-code', 'generate', '--seed', formatDeviceSeed(seed), '--time', '2009-02-13T23:31:30Z'], { encoding: 'utf8' });
    assert.equal(real.status, 0, real.stderr);
    assert.equal(real.stdout.trim(), '182000004291819424');
    const bad = spawnSync(process.execPath, [BIN, 'payment-code', 'generate', '--seed', 'nonsense'], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--seed is not a device seed/);
    // …the other cases in process (each process start costs seconds).
    const run = async (argv: string[]) => {
      const lines: string[] = [];
      const args = { ...parseCommandArgs(paymentCodeGenerateCommand, argv), out: (l: string) => lines.push(l) };
      await paymentCodeGenerateCommand.run(args);
      return lines.join('\n');
    };
    assert.equal(await run(['--seed', formatDeviceSeed(seed), '--time', '1234567890']), '182000004291819424');
    assert.equal(await run(['--seed', formatDeviceSeed(seed), '--time', '@1234567890']), '182000004291819424');
    await assert.rejects(run(['--seed', formatDeviceSeed(seed), '--time', 'yesterday']), UsageError);
    await assert.rejects(run(['--time', '1234567890']), UsageError);
  });
});

describe('the payment-code service seals its own secrets', () => {
  it('AES-256-GCM bound to the row: another row, another key or a flipped bit does not unseal', () => {
    const sealer = new PaymentCodeSealer(randomBytes(32));
    const sealed = sealer.seal(Buffer.from('seed'), 'pc_offline_seeds.seed_sealed:pcs_1');
    assert.deepEqual(sealer.unseal(sealed, 'pc_offline_seeds.seed_sealed:pcs_1'), Buffer.from('seed'));
    assert.throws(() => sealer.unseal(sealed, 'pc_offline_seeds.seed_sealed:pcs_2'), SealError);
    assert.throws(() => new PaymentCodeSealer(randomBytes(32)).unseal(sealed, 'pc_offline_seeds.seed_sealed:pcs_1'), SealError);
    const parts = sealed.split('.');
    parts[3] = Buffer.from(Buffer.from(parts[3] as string, 'base64url').map((b, i) => (i === 0 ? b ^ 1 : b))).toString('base64url');
    assert.throws(() => sealer.unseal(parts.join('.'), 'pc_offline_seeds.seed_sealed:pcs_1'), SealError);
    const rotated = new PaymentCodeSealer(randomBytes(32), [randomBytes(32)]);
    assert.throws(() => rotated.unseal(sealed, 'pc_offline_seeds.seed_sealed:pcs_1'), SealError);
  });
});
