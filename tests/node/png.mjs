// PNG chunks and zip members read with Node's own modules, for the card checks beside it.
import { inflateRawSync } from 'node:zlib';

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
});

export function crc32(bytes) {
    let c = 0xffffffff;
    for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
}

/** Every chunk, as `png-chunks-extract` (SillyTavern's dependency) reads them: the signature, each CRC
 * and a closing IEND are checked, and a file that fails any of them is refused. */
export function extractChunks(data) {
    if (!data.subarray(0, 8).equals(SIGNATURE)) throw new Error('Invalid .png file header');
    const chunks = [];
    let at = 8;
    let ended = false;
    while (at < data.length) {
        const length = data.readUInt32BE(at);
        const name = data.toString('latin1', at + 4, at + 8);
        const body = data.subarray(at + 8, at + 8 + length);
        const expected = data.readInt32BE(at + 8 + length);
        const actual = crc32(data.subarray(at + 4, at + 8 + length)) | 0;
        if (expected !== actual) throw new Error(`CRC values for ${name} header do not match, PNG file is likely corrupted`);
        chunks.push({ name, data: body });
        at += 12 + length;
        if (name === 'IEND') { ended = true; break; }
    }
    if (!ended) throw new Error('.png file ended prematurely: no IEND header was found');
    return chunks;
}

/** `png-chunk-text`'s decode: keyword and text, each byte one character. */
export function decodeText(body) {
    const nul = body.indexOf(0);
    return { keyword: body.toString('latin1', 0, nul), text: body.toString('latin1', nul + 1) };
}

/** The members of a zip (stored or deflated), by name, from its central directory. */
export function readZip(data) {
    let end = data.length - 22;
    while (end >= 0 && data.readUInt32LE(end) !== 0x06054b50) end--;
    if (end < 0) throw new Error('not a zip');
    const count = data.readUInt16LE(end + 10);
    let at = data.readUInt32LE(end + 16);
    const files = {};
    for (let i = 0; i < count; i++) {
        const method = data.readUInt16LE(at + 10);
        const size = data.readUInt32LE(at + 20);
        const nameLength = data.readUInt16LE(at + 28);
        const extraLength = data.readUInt16LE(at + 30);
        const commentLength = data.readUInt16LE(at + 32);
        const local = data.readUInt32LE(at + 42);
        const name = data.toString('utf8', at + 46, at + 46 + nameLength);
        const start = local + 30 + data.readUInt16LE(local + 26) + data.readUInt16LE(local + 28);
        const raw = data.subarray(start, start + size);
        files[name] = method === 8 ? inflateRawSync(raw) : Buffer.from(raw);
        at += 46 + nameLength + extraLength + commentLength;
    }
    return files;
}
