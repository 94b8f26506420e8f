// A card read the way RisuAI imports one (src/ts/characterCards.ts `importCharacterProcess` and
// `importCharacterCardSpec`, src/ts/pngChunk.ts `readGenerator`), as far as its assets go: in a PNG,
// every tEXt chunk (keyword up to the first NUL in 70 bytes, both decoded as UTF-8), `chara-ext-asset_:N`
// chunks as the files `__asset:N` names (the last of a number winning), `ccv3` before `chara`; in a
// CHARX (src/ts/process/processzip.ts `CharXReader`), `card.json` and every other member but
// `module.risum` and those ending in `.json`, which it skips, as the files `embeded://path` names.
// A V2 card's pictures come from its RisuAI extension (`emotions`, `additionalAssets`); a V3 card's
// from its `assets` alone. Each resolves as RisuAI resolves it, and a URI naming a file the card does
// not hold fails the whole import, as RisuAI's does ("asset N not found"); so does `ccdefault:` in a
// CHARX, which has no card picture for it to name (RisuAI would keep a picture with no image).
// Prints {assets: [{type, name, ext, from, sha256, size}]} or {error}.
// Usage: node risuai_assets.mjs card.png|card.charx
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readZip } from './png.mjs';

const path = process.argv[2];
const raw = readFileSync(path);
const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

function readPng(data) {
    const utf8 = new TextDecoder();
    const assets = {};
    let chara = '';
    let ccv3 = '';
    const kept = [data.subarray(0, 8)];
    let at = 8;
    while (at < data.length) {
        const length = data.readUInt32BE(at);
        const type = data.toString('latin1', at + 4, at + 8);
        if (type === 'IEND') { kept.push(data.subarray(at, at + 12 + length)); break; }
        if (type === 'tEXt') {
            const body = data.subarray(at + 8, at + 8 + length);
            let key = '';
            let value = '';
            for (let i = 0; i < 70; i++) {
                if (body[i] === 0) {
                    key = utf8.decode(body.subarray(0, i));
                    value = utf8.decode(body.subarray(i + 1));
                    break;
                }
            }
            if (key === 'chara') chara = value;
            else if (key === 'ccv3') ccv3 = value;
            else if (key.startsWith('chara-ext-asset_')) {
                const index = key.replace('chara-ext-asset_:', '').replace('chara-ext-asset_', '');
                assets[index] = Buffer.from(value, 'base64');
            }
        } else {
            kept.push(data.subarray(at, at + 12 + length));
        }
        at += 12 + length;
    }
    if (!chara && !ccv3) throw new Error('no card data');
    return { card: JSON.parse(Buffer.from(ccv3 || chara, 'base64').toString('utf-8')), assets, image: Buffer.concat(kept) };
}

function readCharx(data) {
    const files = readZip(data);
    if (!files['card.json']) throw new Error('no card data');
    const card = JSON.parse(files['card.json'].toString('utf-8'));
    if (card.spec !== 'chara_card_v3') throw new Error('not a V3 card');
    const assets = {};
    for (const [name, bytes] of Object.entries(files)) {
        if (name !== 'card.json' && name !== 'module.risum' && !name.endsWith('.json')) assets[name] = bytes;
    }
    return { card, assets, image: undefined };
}

try {
    const { card, assets, image } = path.endsWith('.charx') ? readCharx(raw) : readPng(raw);
    if (card.spec !== 'chara_card_v2' && card.spec !== 'chara_card_v3') throw new Error('not a card');
    const found = [];
    const risu = card.data.extensions?.risuai;
    if (risu && card.spec === 'chara_card_v2') {
        const lists = [['emotion', risu.emotions ?? []], ['x-risu-asset', risu.additionalAssets ?? []]];
        for (const [type, entries] of lists) {
            for (const [name, value, ext] of entries) {
                if (value.startsWith('__asset:') && !assets[value.replace('__asset:', '')]) {
                    throw new Error('Error while importing, asset ' + value.replace('__asset:', '') + ' not found');
                }
                const bytes = value.startsWith('__asset:') ? assets[value.replace('__asset:', '')] : Buffer.from(value, 'base64');
                found.push({ type, name, ext: ext || 'png', from: 'extension', sha256: sha256(bytes), size: bytes.length });
            }
        }
    }
    if (card.spec === 'chara_card_v3') {
        for (const asset of card.data.assets ?? []) {
            let bytes;
            let from;
            if (asset.uri.startsWith('__asset:')) {
                const key = asset.uri.replace('__asset:', '');
                bytes = assets[key];
                from = 'chunk';
                if (!bytes) throw new Error('Error while importing, asset ' + key + ' not found');
            } else if (asset.uri === 'ccdefault:') {
                bytes = image;
                from = 'card';
                if (!bytes) throw new Error('Error while importing, ccdefault: names no picture in a CHARX');
            } else if (asset.uri.startsWith('embeded://')) {
                const key = asset.uri.replace('embeded://', '');
                bytes = assets[key];
                from = 'file';
                if (!bytes) throw new Error('Error while importing, asset ' + key + ' not found');
            } else if (asset.uri.startsWith('data:')) {
                bytes = Buffer.from(asset.uri.split(',')[1], 'base64');
                from = 'data';
            } else {
                continue; // RisuAI leaves other URIs (links) behind
            }
            found.push({
                type: asset.type, name: asset.name, ext: asset.ext, from,
                sha256: bytes ? sha256(bytes) : null, size: bytes ? bytes.length : 0,
            });
        }
    }
    process.stdout.write(JSON.stringify({ assets: found }));
} catch (error) {
    process.stdout.write(JSON.stringify({ error: String(error.message ?? error) }));
}
