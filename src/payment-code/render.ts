import { crc32, deflateSync } from 'node:zlib';
import bwipjs from 'bwip-js';
import QRCode from 'qrcode';

/**
 * Pictures of a code for a screen. Both have a white background and a quiet zone (Code 128
 * needs ≥ 10 modules either side, QR 4 modules all round): without them a phone in dark
 * mode shows a code most scanners cannot read. Tests decode both with zbarimg.
 */
export async function code128Png(text: string): Promise<Buffer> {
  return bwipjs.toBuffer({
    bcid: 'code128',
    text,
    scale: 2,
    height: 14,
    includetext: true,
    textxalign: 'center',
    backgroundcolor: 'FFFFFF',
    barcolor: '000000',
    // In modules (bwip-js multiplies by `scale`): the Code 128 quiet zone is 10 modules.
    paddingwidth: 12,
    paddingheight: 4,
  });
}

/**
 * `scale` is pixels per module. The symbol is the qrcode package's (segments, error
 * correction M, the mask with the lowest penalty); the PNG is written here, 1 bit per pixel:
 * the qrcode package's own PNG path (pngjs: RGBA, five filters tried per row) cost ~3× the
 * whole symbol. Pages enlarge the image with `image-rendering: pixelated`.
 */
export async function qrPng(text: string, scale = 4): Promise<Buffer> {
  const { modules } = QRCode.create(text, { errorCorrectionLevel: 'M' });
  return monochromePng(modules.size, modules.data, QR_QUIET_ZONE, scale);
}

const QR_QUIET_ZONE = 4;
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function pngChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'ascii');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(data, crc32(head.subarray(4))), 0);
  return Buffer.concat([head, data, crc]);
}

/**
 * A square matrix of modules (1 = dark, row by row) as a 1-bit greyscale PNG: black on
 * white, `margin` light modules all round, `scale` pixels per module.
 */
export function monochromePng(size: number, dark: ArrayLike<number | boolean>, margin: number, scale: number): Buffer {
  if (!Number.isInteger(size) || size < 1 || dark.length !== size * size) throw new TypeError('module matrix does not match its size');
  if (!Number.isInteger(scale) || scale < 1 || !Number.isInteger(margin) || margin < 0) throw new TypeError('scale and margin must be whole numbers');
  const width = (size + 2 * margin) * scale;
  const rowBytes = Math.ceil(width / 8);
  // Grey 1-bit: a set bit is white. Every row starts with filter type 0 (none).
  const raw = Buffer.alloc((rowBytes + 1) * width);
  const row = Buffer.alloc(rowBytes + 1);
  for (let y = 0; y < width; y++) {
    const my = Math.floor(y / scale) - margin;
    if (y % scale === 0) {
      row.fill(0);
      for (let x = 0; x < width; x++) {
        const mx = Math.floor(x / scale) - margin;
        const isDark = my >= 0 && my < size && mx >= 0 && mx < size && Boolean(dark[my * size + mx]);
        if (!isDark) row[1 + (x >> 3)] = (row[1 + (x >> 3)] as number) | (0x80 >> (x & 7));
      }
    }
    row.copy(raw, y * (rowBytes + 1));
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(width, 4);
  header[8] = 1; // bit depth
  header[9] = 0; // greyscale
  return Buffer.concat([PNG_SIGNATURE, pngChunk('IHDR', header), pngChunk('IDAT', deflateSync(raw)), pngChunk('IEND', Buffer.alloc(0))]);
}
