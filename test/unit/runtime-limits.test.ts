import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runtimeRestart } from '../../src/cli/runtime-limits.ts';
import { loadConfig } from '../../src/config/load-config.ts';

const defaults = loadConfig({ env: {} }).runtime;

describe('runtimeRestart (stepgate serve heap limits)', () => {
  it('adds the configured heap flags and MALLOC_ARENA_MAX to a plain start, keeping the other node options', () => {
    assert.deepEqual(defaults, { heap: { maxOldSpaceMb: 128, maxSemiSpaceMb: 16 }, mallocArenaMax: 2 });
    const r = runtimeRestart(defaults, ['--disable-warning=ExperimentalWarning'], { PATH: '/bin' });
    assert.deepEqual(r?.execArgv, ['--disable-warning=ExperimentalWarning', '--max-old-space-size=128', '--max-semi-space-size=16']);
    assert.deepEqual(r?.env, { PATH: '/bin', MALLOC_ARENA_MAX: '2' });
  });

  it('does nothing once the process runs with them (no restart loop)', () => {
    const first = runtimeRestart(defaults, [], {});
    assert.ok(first);
    assert.equal(runtimeRestart(defaults, first.execArgv, first.env), undefined);
  });

  it("the operator's own flags win, in either spelling and from NODE_OPTIONS", () => {
    assert.deepEqual(runtimeRestart(defaults, ['--max-old-space-size=512'], { MALLOC_ARENA_MAX: '4' })?.execArgv, ['--max-old-space-size=512', '--max-semi-space-size=16']);
    assert.deepEqual(runtimeRestart(defaults, ['--max_semi_space_size=32'], { MALLOC_ARENA_MAX: '4' })?.execArgv, ['--max_semi_space_size=32', '--max-old-space-size=128']);
    assert.equal(runtimeRestart(defaults, [], { NODE_OPTIONS: '--max-old-space-size=300  --max-semi-space-size=8', MALLOC_ARENA_MAX: '8' }), undefined);
    // An operator's MALLOC_ARENA_MAX is kept as it is.
    assert.equal(runtimeRestart(defaults, [], { MALLOC_ARENA_MAX: '8' })?.env.MALLOC_ARENA_MAX, '8');
    // A flag that merely starts with the same letters is not the same flag.
    assert.ok(runtimeRestart(defaults, ['--max-old-space-size-x=1'], { MALLOC_ARENA_MAX: '8' })?.execArgv.includes('--max-old-space-size=128'));
  });

  it('0 leaves each setting to Node and glibc', () => {
    assert.equal(runtimeRestart({ heap: { maxOldSpaceMb: 0, maxSemiSpaceMb: 0 }, mallocArenaMax: 0 }, [], {}), undefined);
    assert.deepEqual(runtimeRestart({ heap: { maxOldSpaceMb: 0, maxSemiSpaceMb: 16 }, mallocArenaMax: 0 }, [], {})?.execArgv, ['--max-semi-space-size=16']);
  });

  it('the configuration refuses limits the gateway cannot run with', () => {
    assert.throws(() => loadConfig({ env: {}, overrides: { runtime: { heap: { maxOldSpaceMb: 32 } } } }), /runtime\.heap\.maxOldSpaceMb/);
    assert.throws(() => loadConfig({ env: {}, overrides: { runtime: { heap: { maxSemiSpaceMb: -1 } } } }), /runtime\.heap\.maxSemiSpaceMb/);
    assert.throws(() => loadConfig({ env: {}, overrides: { runtime: { heap: { maxOldSpaceSize: 128 } } } }), /runtime\.heap\.maxOldSpaceSize/);
    assert.equal(loadConfig({ env: {}, overrides: { runtime: { heap: { maxOldSpaceMb: 0 } } } }).runtime.heap.maxOldSpaceMb, 0);
  });
});
