// Encore media tokens at the edge (njs 0.7+): the same check as
// src/encore/streaming/signing.py, run before nginx serves a media file, cached or not.
//
// URL:   /media/t/<token>/<prefix: three segments>/<file...>
// Token: <kid>.<expires>.<user hex>.<signature>, where signature is the unpadded base64url
//        HMAC-SHA256, under the key <kid>, of "v1|<kid>|<expires>|<user hex>|<prefix>".
// Keys:  the nginx variable $media_signing_keys holds the JSON object of
//        ENCORE_MEDIA_SIGNING_KEYS (key id -> base64url secret), e.g. from `js_var` in an
//        included file (keys.conf.example).

import crypto from 'crypto';

const MEDIA_ROOT = '/media/t/';
const PREFIX_SEGMENTS = 3;
const MIN_KEY_BYTES = 32;
const TOKEN = /^([A-Za-z0-9_-]{1,16})\.([0-9]{1,12})\.([0-9a-f]{32})\.([A-Za-z0-9_-]{43})$/;

// The verdicts edge.conf maps to statuses: valid serves, invalid 403, expired 410,
// malformed 404, unconfigured 500 (no usable keys: an operator error, never a client's).
const VALID = 'valid';
const INVALID = 'invalid';
const EXPIRED = 'expired';
const MALFORMED = 'malformed';
const UNCONFIGURED = 'unconfigured';

// [token, prefix] of a raw request path, or null when it is no media path or tries to leave
// its prefix. The raw path (not $uri, which nginx has already decoded and normalised) is
// checked, with the origin's rules: no %-escapes or backslashes anywhere, no empty, "." or
// ".." segment after the token.
function splitMediaPath(requestUri) {
    const query = requestUri.indexOf('?');
    const path = query === -1 ? requestUri : requestUri.slice(0, query);
    if (!path.startsWith(MEDIA_ROOT) || path.indexOf('%') !== -1 || path.indexOf('\\') !== -1) {
        return null;
    }
    const parts = path.slice(MEDIA_ROOT.length).split('/');
    if (parts.length < 2 + PREFIX_SEGMENTS) {
        return null;
    }
    for (let i = 1; i < parts.length; i++) {
        if (parts[i] === '' || parts[i] === '.' || parts[i] === '..') {
            return null;
        }
    }
    return [parts[0], parts.slice(1, 1 + PREFIX_SEGMENTS).join('/')];
}

// The secret bytes of key `kid`, null when there is no such key, undefined when the key
// setting itself is unusable.
function signingKey(r, kid) {
    const setting = r.variables.media_signing_keys;
    if (!setting) {
        r.error('media token: $media_signing_keys is not set; include the keys file');
        return undefined;
    }
    let keys;
    try {
        keys = JSON.parse(setting);
    } catch (e) {
        r.error('media token: $media_signing_keys is not a JSON object');
        return undefined;
    }
    if (keys === null || typeof keys !== 'object') {
        r.error('media token: $media_signing_keys is not a JSON object');
        return undefined;
    }
    // An own property only: a kid such as "__proto__" or "constructor" names no key.
    if (!Object.prototype.hasOwnProperty.call(keys, kid) || typeof keys[kid] !== 'string') {
        return null;
    }
    const secret = Buffer.from(keys[kid].trim(), 'base64url');
    if (secret.length < MIN_KEY_BYTES) {
        r.error(`media token: key ${kid} holds fewer than ${MIN_KEY_BYTES} bytes`);
        return undefined;
    }
    return secret;
}

// Whether two ASCII strings are equal, in time that depends on their length only.
function equalInConstantTime(a, b) {
    if (a.length !== b.length) {
        return false;
    }
    let difference = 0;
    for (let i = 0; i < a.length; i++) {
        difference |= a.charCodeAt(i) ^ b.charCodeAt(i);
    }
    return difference === 0;
}

// The verdict on this request's media token (for `js_set $media_token_verdict`).
function verdict(r) {
    const parts = splitMediaPath(r.variables.request_uri);
    if (parts === null) {
        return MALFORMED;
    }
    const match = TOKEN.exec(parts[0]);
    if (match === null) {
        return INVALID;
    }
    const kid = match[1];
    const expires = match[2];
    const userHex = match[3];
    const key = signingKey(r, kid);
    if (key === undefined) {
        return UNCONFIGURED;
    }
    if (key === null) {
        return INVALID;
    }
    // Python formats int(expires): leading zeros are not part of the signed message.
    const message = `v1|${kid}|${Number(expires)}|${userHex}|${parts[1]}`;
    const expected = crypto.createHmac('sha256', key).update(message).digest('base64url');
    if (!equalInConstantTime(expected, match[4])) {
        return INVALID;
    }
    if (Number(expires) <= Date.now() / 1000) {
        return EXPIRED;
    }
    return VALID;
}

export default { verdict };
