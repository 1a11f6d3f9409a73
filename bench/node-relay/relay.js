// A plain push relay in Node, the yardstick of issue 19: express, pg and
// @parse/node-apn in one process; one SELECT per webhook, no de-duplication, no queue,
// no retries, nothing kept on record. It reads the webex-push load tool's environment
// and the devices table webex-push's migrations make, so `webex-push-load --server-bin
// bench/node-relay/run.sh` measures it exactly as it measures webex-push.
//
// POST /webhook: checks X-Spark-Signature (HMAC-SHA1 under WEBHOOK_SECRET), and for a
// callMemberships ring ("notified", not the initiator) sends a VoIP push carrying
// `webex.callId` to each of the callee's VoIP tokens, answering 204 once they are
// handed to node-apn. GET /readyz: 200. Prints {"message":"listening","address":...}.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const express = require('express');
const { Pool } = require('pg');
const apn = require('@parse/node-apn');

const env = name => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const secret = env('WEBHOOK_SECRET');
const topic = env('APNS_TOPIC');
const endpoint = new URL(env('APNS_ENDPOINT'));
const pool = new Pool({ connectionString: env('DATABASE_URL'), max: 10 });
const provider = new apn.Provider({
  token: { key: fs.readFileSync(env('APNS_KEY_FILE')), keyId: env('APNS_KEY_ID'), teamId: env('APNS_TEAM_ID') },
  address: endpoint.hostname,
  port: Number(endpoint.port || 443),
  ca: process.env.APNS_CA_FILE ? fs.readFileSync(process.env.APNS_CA_FILE) : undefined,
  production: true,
});

// The UUID inside a Webex person id (base64 of ciscospark://<cluster>/PEOPLE/<uuid>).
function personUuid(id) {
  if (typeof id !== 'string') return null;
  const decoded = Buffer.from(id, 'base64').toString('utf8');
  const uuid = decoded.slice(decoded.lastIndexOf('/') + 1);
  return /^[0-9a-f-]{36}$/i.test(uuid) ? uuid.toLowerCase() : null;
}

function signed(body, header) {
  if (typeof header !== 'string' || header.length !== 40) return false;
  const expected = crypto.createHmac('sha1', secret).update(body).digest('hex');
  return crypto.timingSafeEqual(Buffer.from(expected), Buffer.from(header.toLowerCase()));
}

const app = express();
app.get('/readyz', (_req, res) => res.status(200).json({ status: 'ready' }));
app.post('/webhook', express.raw({ type: '*/*', limit: '256kb' }), async (req, res) => {
  if (!signed(req.body, req.get('X-Spark-Signature'))) return res.status(401).end();
  let event;
  try {
    event = JSON.parse(req.body.toString('utf8'));
  } catch {
    return res.status(400).end();
  }
  const data = event.data || {};
  if (event.resource !== 'callMemberships' || data.state !== 'notified' || data.isInitiator) {
    return res.status(204).end();
  }
  const person = personUuid(data.personId);
  if (!person || typeof data.callId !== 'string') return res.status(400).end();
  let rows;
  try {
    ({ rows } = await pool.query(
      "SELECT token FROM devices WHERE person_uuid = $1 AND channel = 'voip'",
      [person]
    ));
  } catch {
    return res.status(503).end();
  }
  for (const { token } of rows) {
    const note = new apn.Notification();
    note.topic = `${topic}.voip`;
    note.pushType = 'voip';
    note.priority = 10;
    note.expiry = Math.floor(Date.now() / 1000) + 20;
    note.payload = { webex: { callId: data.callId, callerId: event.actorId } };
    provider.send(note, token).catch(() => {});
  }
  res.status(204).end();
});

const server = app.listen(Number(process.env.PORT || 0), process.env.HOST || '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(JSON.stringify({ message: 'listening', address: `${address}:${port}` }));
});

process.on('SIGTERM', () => {
  server.close(async () => {
    await provider.shutdown();
    await pool.end();
    process.exit(0);
  });
});
