// A card PNG read the way SillyTavern imports one (src/character-card-parser.js `read`, then
// src/endpoints/characters.js `importFromPng` and `readFromV2`): tEXt chunks only, `ccv3` before
// `chara` (keywords compared in lower case, the first of each), base64 of UTF-8 JSON; a V2/V3 card's
// `data` fields are copied to the top, where its prompt reads them. Prints the character as JSON.
// Usage: node sillytavern_card.mjs card.png
import { readFileSync } from 'node:fs';
import { decodeText, extractChunks } from './png.mjs';

const texts = extractChunks(readFileSync(process.argv[2]))
    .filter((chunk) => chunk.name === 'tEXt')
    .map((chunk) => decodeText(chunk.data));
if (texts.length === 0) throw new Error('No PNG metadata.');
const found = texts.find((t) => t.keyword.toLowerCase() === 'ccv3') ?? texts.find((t) => t.keyword.toLowerCase() === 'chara');
if (!found) throw new Error('No PNG metadata.');
const card = JSON.parse(Buffer.from(found.text, 'base64').toString('utf8'));

// readFromV2: each field SillyTavern's prompt uses, from `data`
const fields = {
    name: 'name', description: 'description', personality: 'personality', scenario: 'scenario',
    first_mes: 'first_mes', mes_example: 'mes_example', talkativeness: 'extensions.talkativeness',
    fav: 'extensions.fav', tags: 'tags',
};
const get = (object, path) => path.split('.').reduce((value, key) => (value == null ? undefined : value[key]), object);
if (card.spec !== undefined) {
    if (card.data === undefined) throw new Error('Spec v2 data missing');
    for (const [field, path] of Object.entries(fields)) {
        const value = get(card.data, path);
        if (value === undefined) {
            if (path === 'extensions.talkativeness') card[field] = 0.5;
            if (path === 'extensions.fav') card[field] = false;
            continue;
        }
        card[field] = value;
    }
}
process.stdout.write(JSON.stringify({ chunk: found.keyword, card }));
