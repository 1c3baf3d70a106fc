import { hash, verify } from '@node-rs/argon2';
const phc = await hash('bench password 123', { algorithm: 2, memoryCost: 19456, timeCost: 2, parallelism: 1 });
for (const conc of [1, 2]) for (let round = 0; round < 2; round++) {
  const N = 100; const c0 = process.cpuUsage(); const t0 = performance.now();
  const ps = [];
  for (let i = 0; i < N; i++) { ps.push(verify(phc, 'bench password 123')); if (ps.length >= conc) await ps.shift(); }
  await Promise.all(ps);
  const c = process.cpuUsage(c0);
  console.log('conc', conc, 'wall ms', ((performance.now() - t0) / N).toFixed(2), 'cpu ms', ((c.user + c.system) / 1000 / N).toFixed(2), 'sys ms', (c.system/1000/N).toFixed(2), 'per cpu-s', (1000/((c.user + c.system) / 1000 / N)).toFixed(0));
}
