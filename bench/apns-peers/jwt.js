// Prints an APNs provider token (ES256 JWT, key id KEY1234567, team TEAM123456) signed
// with the .p8 key given, for h2load.sh. Usage: node jwt.js <key.p8>
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const key = crypto.createPrivateKey(fs.readFileSync(process.argv[2]));
const b64 = value => Buffer.from(JSON.stringify(value)).toString('base64url');
const input = `${b64({ alg: 'ES256', kid: 'KEY1234567' })}.${b64({ iss: 'TEAM123456', iat: Math.floor(Date.now() / 1000) })}`;
const signature = crypto.sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
process.stdout.write(`${input}.${signature.toString('base64url')}`);
