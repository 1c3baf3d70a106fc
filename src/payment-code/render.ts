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
 * `scale` is pixels per module. PNG encoding dominates the cost (a signed payload needs ~80
 * modules a side), so it is kept small; pages enlarge the image with `image-rendering: pixelated`.
 */
export async function qrPng(text: string, scale = 4): Promise<Buffer> {
  return QRCode.toBuffer(text, {
    type: 'png',
    errorCorrectionLevel: 'M',
    margin: 4,
    scale,
    color: { dark: '#000000ff', light: '#ffffffff' },
  });
}
