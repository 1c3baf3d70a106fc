// The child-process side of readTokenFileInChild: reads one vendor file in a process of its
// own, so the file's text and XML tree live in this process's heap (returned to the system
// when it exits), never in the gateway's, whose heap is kept small (config runtime.heap).
// Protocol: one message in (ChildRequest), one message out (ChildReply), then exit.
import { isAppError } from '../errors/app-error.ts';
import type { ChildReply, ChildRequest, PackedTokenFile } from './read-token-file-in-child.ts';
import { readTokenFile, type ReadTokenFileOptions } from './read-token-file.ts';

function answer(reply: ChildReply): void {
  process.send?.(reply, undefined, {}, () => process.exit(0));
}

process.once('message', (request: ChildRequest) => {
  const psk = request.psk === undefined ? undefined : Buffer.from(request.psk.buffer, request.psk.byteOffset, request.psk.byteLength);
  const options: ReadTokenFileOptions = { ...request.options, password: request.password, psk };
  const data = Buffer.from(request.data.buffer, request.data.byteOffset, request.data.byteLength);
  let reply: ChildReply;
  try {
    const file = readTokenFile(data, options);
    // Every seed into one buffer; this process's copies are zeroed before it answers.
    const total = file.tokens.reduce((n, t) => n + t.seed.length, 0);
    const seeds = new Uint8Array(total);
    let offset = 0;
    const tokens: PackedTokenFile['tokens'] = file.tokens.map(({ seed, ...rest }) => {
      seeds.set(seed, offset);
      const packed = { ...rest, seedOffset: offset, seedLength: seed.length };
      offset += seed.length;
      seed.fill(0);
      return packed;
    });
    reply = { ok: true, file: { format: file.format, encryption: file.encryption, problems: file.problems, tokens, seeds } };
  } catch (err) {
    reply = isAppError(err)
      ? { ok: false, appError: { code: err.code, detail: err.detail, invalidParams: err.invalidParams } }
      : { ok: false, unexpected: err instanceof Error ? `${err.name}: ${err.message}` : String(err) };
  } finally {
    psk?.fill(0);
    data.fill(0);
  }
  answer(reply);
});
// The parent went away (it was stopped): nobody is waiting for the answer.
process.once('disconnect', () => process.exit(0));
