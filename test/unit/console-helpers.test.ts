import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ActivityDay } from '../../src/flows/console-dashboard.ts';
import { isConsoleSecondFactorType, sessionHasSecondFactor } from '../../src/flows/console-session.ts';
import { barChart } from '../../src/http/console-chart.ts';

describe('console helpers', () => {
  it('a session has a console second factor only with mfa, or a passkey (hwk/swk with user verification)', () => {
    assert.equal(sessionHasSecondFactor(['pwd']), false);
    assert.equal(sessionHasSecondFactor(['pwd', 'otp']), false);
    assert.equal(sessionHasSecondFactor(['pwd', 'sms']), false);
    assert.equal(sessionHasSecondFactor(['hwk']), false, 'a security key without user verification');
    assert.equal(sessionHasSecondFactor(['user']), false);
    assert.equal(sessionHasSecondFactor(['pwd', 'otp', 'mfa']), true);
    assert.equal(sessionHasSecondFactor(['hwk', 'user']), true);
    assert.equal(sessionHasSecondFactor(['swk', 'user']), true);
    assert.equal(isConsoleSecondFactorType('totp'), true);
    assert.equal(isConsoleSecondFactorType('hardware_otp'), true);
    for (const t of ['sms_otp', 'recovery_code', 'password', 'webauthn', '', undefined]) assert.equal(isConsoleSecondFactorType(t), false, String(t));
  });

  it('the chart: bars scale to a round maximum, stay inside the plot, and small counts get whole-number gridlines', () => {
    const days: ActivityDay[] = Array.from({ length: 14 }, (_, i) => ({ day: `2026-11-${String(18 + i).padStart(2, '0')}`, stepups: i * 10, failures: i, lockouts: i % 2 }));
    const c = barChart(days);
    assert.equal(c.bars.length, 14 * 3);
    assert.deepEqual(c.ticks.map((t) => t.value), [0, 50, 100, 150, 200]);
    const top = Math.min(...c.ticks.map((t) => t.y));
    const bottom = Math.max(...c.ticks.map((t) => t.y));
    for (const b of c.bars) {
      assert.ok(b.y >= top - 0.1 && b.y + b.height <= bottom + 0.1, `${b.day} ${b.series} inside the plot`);
      assert.ok(b.x >= 0 && b.x + b.width <= c.width, 'inside the width');
    }
    const tallest = c.bars.find((b) => b.day === '2026-11-31' && b.series === 'stepups');
    assert.ok(tallest !== undefined && Math.abs(tallest.height - ((130 / 200) * (bottom - top))) < 0.2);
    // Labels every other day when there are many, so they never overlap.
    assert.equal(c.labels.length, 7);
    const quiet = barChart(days.map((d) => ({ ...d, stepups: 0, failures: 0, lockouts: d.lockouts })));
    assert.deepEqual(quiet.ticks.map((t) => t.value), [0, 1, 2, 3, 4]);
    const empty = barChart(days.map((d) => ({ ...d, stepups: 0, failures: 0, lockouts: 0 })));
    assert.ok(empty.bars.every((b) => b.height === 0));
  });
});
